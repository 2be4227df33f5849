"""`ulmfit export`: a self-contained inference bundle of a classifier run.

The bundle holds `model.pth` (a weights-only state dict), `vocab.json`, `labels.json`,
`classifier.json` (architecture, head, input handling) and, for a subword model,
`tokenizer.model`: everything `ulmfit predict` and `load_classifier` need, nothing pickled.
It is written into a staging folder and renamed into place, so a failed export leaves nothing;
the output is locked while it is written.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ulmfit_cli.corpus.tokenize import SP_MODEL
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import exclusive, publish, staging_dir
from ulmfit_cli.inference.classifier import BUNDLE_FILE, BUNDLE_FORMAT, Classifier
from ulmfit_cli.version import __version__


def export(model_dir: Path, out: Path, force: bool = False) -> Path:
    with exclusive(out, f"--output {out}"):  # one writer of the staging folder
        return _export(model_dir, out, force)


def _export(model_dir: Path, out: Path, force: bool) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise UlmfitError(f"--output: {out} exists and is not empty; pass --force to replace it")
    clf = Classifier.load(model_dir, device="cpu")
    staging = staging_dir(out)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name in ("model.pth", "vocab.json", "labels.json"):
            shutil.copyfile(clf.path / name, staging / name)
        if clf.sp_model is not None:
            shutil.copyfile(clf.sp_model, staging / SP_MODEL)
        meta = {"format": BUNDLE_FORMAT, "ulmfit_version": __version__, "source": str(model_dir),
                "spec": clf.spec.model_dump(mode="json")}
        (staging / BUNDLE_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, out)
    return out
