"""`ulmfit export`: a self-contained bundle of a classifier or a language-model run.

A classifier bundle holds `model.pth` (a weights-only state dict), `vocab.json`, `labels.json`,
`classifier.json` (architecture, head, task, input handling), for a multi-label model `thresholds.json`,
for a blend with the baseline `blend.json`, `baseline.json` and `baseline.npz`, and, for a subword model,
`tokenizer.model`:
everything `ulmfit predict` and `load_classifier` need, nothing pickled. A language-model bundle is the
run's config.yaml, vocab.json, lm.pth, encoder.pth (and tokenizer.model): a run dir without checkpoints
or logs, which `init.from_run` and `generate` take. `fmt="fastai"` writes an LM as the files fastai's
`pretrained_fnames` loads instead (`ulmfit_cli.train.fastai_format.export_fastai`).
The bundle is written through `files.staged` (a staging folder renamed into place), so a failed export
leaves nothing; the output is locked while it is written.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ulmfit_cli.classify.pairs import members
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import reads, staged
from ulmfit_cli.inference.classifier import Classifier
from ulmfit_cli.layout import (BASELINE, BASELINE_ARRAYS, BLEND, BUNDLE, BUNDLE_FORMAT, CLASSIFIER, LABELS,
                               LM_BUNDLE_FILES, LM_STAGES, LM_WEIGHTS, PAIR, RESULTS, SP_MODEL, THRESHOLDS,
                               VOCAB, __version__)
from ulmfit_cli.train.fastai_format import export_fastai
from ulmfit_cli.runs import read_run, stage_of

FORMATS = ("ulmfit", "fastai")


def export(model_dir: Path, out: Path, force: bool = False, fmt: str = "ulmfit") -> Path:
    if fmt not in FORMATS:
        raise UlmfitError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    model_dir = Path(model_dir)
    reads(model_dir, "--model")
    with staged(out, f"--output {out}", force) as staging:
        _export(model_dir, staging, fmt)
    return out


def _export(model_dir: Path, staging: Path, fmt: str) -> None:
    """Write the bundle of `model_dir` into the (new, empty) folder `staging`."""
    # a forward+backward pair: a bundle of each member (fwd/, bwd/) and directions.json
    if members(model_dir):
        if fmt == "fastai":
            raise UlmfitError(f"--format fastai: {model_dir} is a forward+backward pair; export --model "
                              f"{model_dir / 'fwd'} and {model_dir / 'bwd'} one at a time")
        for member in members(model_dir):
            (staging / member.name).mkdir()
            _export(member, staging / member.name, fmt)
        for name in (PAIR, RESULTS):
            shutil.copyfile(model_dir / name, staging / name)
        return
    lm = stage_of(model_dir) in LM_STAGES
    if fmt == "fastai" and not lm:
        raise UlmfitError(f"--format fastai: {model_dir} is not a language-model run (pretrain, finetune-lm, "
                          f"or an imported model); fastai's pretrained_fnames loads language models only")
    if not lm:
        _classifier_bundle(Classifier.load(model_dir, device="cpu"), model_dir, staging)
        return
    source = read_run(model_dir, "--model", LM_STAGES, LM_WEIGHTS)
    if fmt == "fastai":
        export_fastai(source, staging)
        return
    for name in LM_BUNDLE_FILES:
        if (source.path / name).is_file():
            shutil.copyfile(source.path / name, staging / name)
    if source.sp_model is not None:
        shutil.copyfile(source.sp_model, staging / SP_MODEL)


def _classifier_bundle(clf: Classifier, model_dir: Path, staging: Path) -> None:
    blend = (BLEND, BASELINE, BASELINE_ARRAYS) if clf.blend is not None else ()
    for name in (CLASSIFIER, VOCAB, LABELS) + ((THRESHOLDS,) if clf.thresholds is not None else ()) + blend:
        shutil.copyfile(clf.path / name, staging / name)
    if clf.sp_model is not None:
        shutil.copyfile(clf.sp_model, staging / SP_MODEL)
    meta = {"format": BUNDLE_FORMAT, "ulmfit_version": __version__, "source": str(model_dir),
            "spec": clf.spec.model_dump(mode="json")}
    (staging / BUNDLE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
