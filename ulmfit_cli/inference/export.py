"""`ulmfit export`: a self-contained bundle of a classifier or a language-model run.

A classifier bundle holds `model.pth` (a weights-only state dict), `vocab.json`, `labels.json`,
`classifier.json` (architecture, head, task, input handling), for a multi-label model `thresholds.json`,
for a blend with the baseline `blend.json`, `baseline.json` and `baseline.npz`, for a subword model
`tokenizer.model`, and the model card `card.json` (`inference.card`): everything `ulmfit predict` and
`load_classifier` need, nothing pickled. `fmt="onnx"` adds `model.onnx` (`inference.onnx_export`), which
the runtime runs without torch; `quantize="int8"` makes it int8 when the validation figure holds. A
language-model bundle is the
run's config.yaml, vocab.json, lm.pth, encoder.pth (and tokenizer.model): a run dir without checkpoints
or logs, which `init.from_run` and `generate` take. `fmt="fastai"` writes an LM as the files fastai's
`pretrained_fnames` loads instead (`ulmfit_cli.train.fastai_format.export_fastai`).
The bundle is written through `files.staged` (a staging folder renamed into place), so a failed export
leaves nothing; the output is locked while it is written.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ulmfit_cli.classify.pairs import members
from ulmfit_cli.classify.splits import read_splits
from ulmfit_cli.config import ClassifierConfig
from ulmfit_cli.console import info, quiet
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import reads, sha256, staged, write_json
from ulmfit_cli.inference.card import build_card
from ulmfit_cli.inference.classifier import Classifier
from ulmfit_cli.inference.onnx_export import INT8_TOLERANCE, OPSET, quantize_int8, write_onnx
from ulmfit_cli.inference.runtime import OnnxClassifier
from ulmfit_cli.layout import (BASELINE, BASELINE_ARRAYS, BLEND, BUNDLE, BUNDLE_FORMAT, CARD, CLASSIFIER,
                               CONFIG, LABELS, LM_BUNDLE_FILES, LM_STAGES, LM_WEIGHTS, ONNX_MODEL, PAIR,
                               RESULTS, SP_MODEL, THRESHOLDS, VOCAB, __version__)
from ulmfit_cli.train.fastai_format import export_fastai
from ulmfit_cli.runs import read_run, stage_of

FORMATS = ("ulmfit", "onnx", "fastai")
QUANTIZE = ("int8",)


def export(model_dir: Path, out: Path, force: bool = False, fmt: str = "ulmfit",
           quantize: str | None = None) -> Path:
    if fmt not in FORMATS:
        raise UlmfitError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if quantize is not None and (quantize not in QUANTIZE or fmt != "onnx"):
        raise UlmfitError(f"--quantize: {quantize!r} " + ("is for --format onnx" if quantize in QUANTIZE else
                                                          f"is not one of {', '.join(QUANTIZE)}"))
    model_dir = Path(model_dir)
    reads(model_dir, "--model")
    with staged(out, f"--output {out}", force) as staging:
        _export(model_dir, staging, fmt, quantize)
    return out


def _export(model_dir: Path, staging: Path, fmt: str, quantize: str | None = None) -> None:
    """Write the bundle of `model_dir` into the (new, empty) folder `staging`."""
    # a forward+backward pair: a bundle of each member (fwd/, bwd/) and directions.json
    if members(model_dir):
        if fmt == "fastai":
            raise UlmfitError(f"--format fastai: {model_dir} is a forward+backward pair; export --model "
                              f"{model_dir / 'fwd'} and {model_dir / 'bwd'} one at a time")
        for member in members(model_dir):
            (staging / member.name).mkdir()
            _export(member, staging / member.name, fmt, quantize)
        for name in (PAIR, RESULTS):
            shutil.copyfile(model_dir / name, staging / name)
        return
    lm = stage_of(model_dir) in LM_STAGES
    if fmt == "fastai" and not lm:
        raise UlmfitError(f"--format fastai: {model_dir} is not a language-model run (pretrain, finetune-lm, "
                          f"or an imported model); fastai's pretrained_fnames loads language models only")
    if fmt == "onnx" and lm:
        raise UlmfitError(f"--format onnx: {model_dir} is a language model; ONNX export is for classifiers "
                          f"(train-clf runs and their bundles)")
    if not lm:
        _classifier_bundle(Classifier.load(model_dir, device="cpu"), model_dir, staging, fmt, quantize)
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


def _classifier_bundle(clf: Classifier, model_dir: Path, staging: Path, fmt: str,
                       quantize: str | None) -> None:
    blend = (BLEND, BASELINE, BASELINE_ARRAYS) if clf.blend is not None else ()
    for name in (CLASSIFIER, VOCAB, LABELS) + ((THRESHOLDS,) if clf.thresholds is not None else ()) + blend:
        shutil.copyfile(clf.path / name, staging / name)
    if clf.sp_model is not None:
        shutil.copyfile(clf.sp_model, staging / SP_MODEL)
    meta = {"format": BUNDLE_FORMAT, "ulmfit_version": __version__, "source": str(model_dir),
            "spec": clf.spec.model_dump(mode="json")}
    export = {"format": fmt, "precision": "fp32"}
    splits = _splits(clf, model_dir, needed=quantize is not None)
    if fmt == "onnx":
        write_onnx(clf, staging / ONNX_MODEL)
        meta["onnx"] = {"file": ONNX_MODEL, "precision": "fp32", "opset": OPSET}
        if quantize:
            export["int8"] = _quantize(staging, meta, {k: v for k, v in splits.items() if k != "train"}, clf)
            meta["onnx"]["precision"] = export["precision"] = "int8" if export["int8"]["kept"] else "fp32"
    write_json(staging / BUNDLE, meta)
    export["files"] = {f.name: sha256(f) for f in sorted(staging.iterdir()) if f.is_file()}
    rows = {name: len(split[0]) for name, split in splits.items()} if splits else None
    shown = (splits.get("test") or splits["valid"])[0] if splits else []
    examples = list(dict.fromkeys(t for t in shown if len(t) <= 300))[:5]  # what serve's page offers to try
    write_json(staging / CARD, build_card(model_dir, clf, rows, export, examples))


def _splits(clf: Classifier, model_dir: Path, needed: bool) -> dict | None:
    """The run's splits as train-clf read them ({name: (texts, targets)}): the card's row counts, and the
    validation (and test) rows int8 is checked on (`needed`: an error says why they cannot be read)."""
    try:
        if not (model_dir / CONFIG).is_file():
            raise UlmfitError(f"{model_dir} is a bundle, without the run's data")
        cfg = read_run(model_dir, "--model", ("train-clf",), CLASSIFIER).typed(ClassifierConfig)
        with quiet():  # read_splits' notes were printed when the run trained
            _, train, valid, test = read_splits(cfg)
    except UlmfitError as e:
        if needed:
            raise UlmfitError(f"--quantize int8: int8 is kept only if the validation figure holds, which "
                              f"needs the run's validation rows: {e}; export from the train-clf run dir, "
                              f"with its data where its config.yaml says") from None
        return None
    parts = {"train": train, "valid": valid, **({"test": test} if test is not None else {})}
    return {name: (df["text"].tolist(), clf.task.targets(clf.labels, df)) for name, df in parts.items()}


def _quantize(staging: Path, meta: dict, splits: dict, clf: Classifier) -> dict:
    """Replace the bundle's fp32 model.onnx by its int8 version if the validation figure (the task's
    selection: accuracy, micro-F1, RMSE) stays within INT8_TOLERANCE of fp32's (RMSE: relative); say which."""
    task, figure = clf.task, clf.task.selection
    fp32, int8 = staging / ONNX_MODEL, staging / "model.int8.onnx"
    quantize_int8(fp32, int8)
    write_json(staging / BUNDLE, meta)  # what OnnxClassifier.load reads; rewritten with the precision kept
    scores = {}
    for precision, file in (("fp32", fp32), ("int8", int8)):
        runtime = OnnxClassifier.load(staging, graph=file)
        scores[precision] = {name: float(task.figures(y, runtime.predict_proba(texts), clf.labels,
                                                      clf.thresholds)[figure])
                             for name, (texts, y) in splits.items()}
    a, b = scores["fp32"]["valid"], scores["int8"]["valid"]
    kept = b <= a * (1 + INT8_TOLERANCE) if task.lower_is_better(figure) else b >= a - INT8_TOLERANCE
    report = {"figure": figure, "kept": bool(kept), "tolerance": INT8_TOLERANCE,
              **{split: {p: scores[p][split] for p in scores} for split in splits}}
    if kept:
        int8.replace(fp32)
    else:
        int8.unlink()
    info(f"int8: validation {figure} {b:.4f} against fp32's {a:.4f}: "
         + ("kept" if kept else f"more than {INT8_TOLERANCE:g} lost, so the bundle keeps fp32"))
    return report
