"""`ulmfit export`: a self-contained bundle of a classifier or a language-model run.

A classifier bundle holds `model.pth` (a weights-only state dict), `vocab.json`, `labels.json`,
`classifier.json` (architecture, head, task, input handling), for a multi-label model `thresholds.json`
and, for a subword model, `tokenizer.model`:
everything `ulmfit predict` and `load_classifier` need, nothing pickled. A language-model bundle is the
run's config.yaml, vocab.json, lm.pth, encoder.pth (and tokenizer.model): a run dir without checkpoints
or logs, which `init.from_run` and `generate` take. `fmt="fastai"` writes an LM as the files fastai's
`pretrained_fnames` loads instead (`ulmfit_cli.pretrained.export_fastai`).
The bundle is written into a staging folder and renamed into place, so a failed export leaves nothing;
the output is locked while it is written.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ulmfit_cli.corpus.tokenize import SP_MODEL
from ulmfit_cli.directions import members
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import exclusive, publish, staging_dir
from ulmfit_cli.inference.classifier import BUNDLE_FILE, BUNDLE_FORMAT, Classifier
from ulmfit_cli.inference.evaluation import THRESHOLDS_FILE
from ulmfit_cli.runs import LM_STAGES, PAIR_FILE, read_run, stage_of
from ulmfit_cli.version import __version__

FORMATS = ("ulmfit", "fastai")
LM_BUNDLE_FILES = ("config.yaml", "vocab.json", "lm.pth", "encoder.pth", "results.json")


def export(model_dir: Path, out: Path, force: bool = False, fmt: str = "ulmfit") -> Path:
    if fmt not in FORMATS:
        raise UlmfitError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    with exclusive(out, f"--output {out}"):  # one writer of the staging folder
        return _export(Path(model_dir), out, force, fmt)


def _export(model_dir: Path, out: Path, force: bool, fmt: str) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UlmfitError(f"--output: {out} exists and is not empty; pass --force to replace it")
    if members(model_dir):
        return _export_pair(model_dir, out, fmt)
    lm = stage_of(model_dir) in LM_STAGES
    if fmt == "fastai" and not lm:
        raise UlmfitError(f"--format fastai: {model_dir} is not a language-model run (pretrain, finetune-lm, or "
                          f"an imported model); fastai's pretrained_fnames loads language models only")
    source = read_run(model_dir, "--model", LM_STAGES, "lm.pth") if lm else Classifier.load(model_dir, device="cpu")
    staging = staging_dir(out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if fmt == "fastai":
            from ulmfit_cli.pretrained import export_fastai
            export_fastai(source, staging)
        elif lm:
            for name in LM_BUNDLE_FILES:
                if (source.path / name).is_file():
                    shutil.copyfile(source.path / name, staging / name)
            if source.sp_model is not None:
                shutil.copyfile(source.sp_model, staging / SP_MODEL)
        else:
            _classifier_bundle(source, model_dir, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, out)
    return out


def _export_pair(model_dir: Path, out: Path, fmt: str) -> Path:
    """A forward+backward pair: a bundle of each member (fwd/, bwd/) and the pair's directions.json."""
    if fmt == "fastai":
        raise UlmfitError(f"--format fastai: {model_dir} is a forward+backward pair; export --model "
                          f"{model_dir / 'fwd'} and {model_dir / 'bwd'} one at a time")
    staging = staging_dir(out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for member in members(model_dir):
            _export(member, staging / member.name, False, fmt)
        for name in (PAIR_FILE, "results.json"):
            shutil.copyfile(model_dir / name, staging / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, out)
    return out


def _classifier_bundle(clf: Classifier, model_dir: Path, staging: Path) -> None:
    for name in ("model.pth", "vocab.json", "labels.json") + ((THRESHOLDS_FILE,) if clf.thresholds is not None else ()):
        shutil.copyfile(clf.path / name, staging / name)
    if clf.sp_model is not None:
        shutil.copyfile(clf.sp_model, staging / SP_MODEL)
    meta = {"format": BUNDLE_FORMAT, "ulmfit_version": __version__, "source": str(model_dir),
            "spec": clf.spec.model_dump(mode="json")}
    (staging / BUNDLE_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
