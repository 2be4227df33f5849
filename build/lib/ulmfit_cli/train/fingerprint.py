"""What a resumed run must share with its checkpoint: every config value that fixes the model, the vocab
or the data (dotted keys), plus a digest of the tokens and vocab. docs/reliability.md lists what may
change."""
from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

import numpy as np

from ulmfit_cli.errors import UlmfitError

# Config keys a resumed run may change; anything else that differs from the checkpoint is refused.
RESUMABLE_CHANGES = (
    "run.name", "run.dir", "run.device", "run.precision", "run.deterministic",
    "data.workers", "data.cache_dir", "data.test",
    "train.epochs", "train.lr", "train.frozen_lr", "train.lr_div", "train.wd", "train.moms",
    "train.checkpoint_every", "train.checkpoint_minutes", "train.stages.*.epochs", "train.stages.*.lr",
    "search.*",
)
DATA_KEY = "data (tokens and vocab)"


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        return {k: v for i, val in enumerate(obj) for k, v in _flatten(val, f"{prefix}{i}.").items()}
    return {prefix[:-1]: obj}


def fingerprint(cfg, data_signature: str) -> dict:
    """The config values (dotted keys) that fix the model, the vocab and the data, plus a digest of the
    data."""
    flat = _flatten(cfg.model_dump(mode="json"))
    kept = {k: v for k, v in flat.items() if not any(fnmatch.fnmatch(k, p) for p in RESUMABLE_CHANGES)}
    kept[DATA_KEY] = data_signature
    return kept


def data_signature(vocab: list[str], *arrays) -> str:
    """A digest of the vocab and the token arrays (or strings, e.g. a token store's name)."""
    digest = hashlib.sha256(json.dumps(vocab).encode())
    for a in arrays:
        digest.update(a.encode() if isinstance(a, str) else np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:16]


def check_fingerprint(saved: dict, now: dict, path: Path) -> None:
    diff = [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}"
            for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diff:
        raise UlmfitError(f"--resume: {path} was trained with a different model, vocab or data:\n  "
                          + "\n  ".join(diff[:12]) + "\nput these back, or start a new run "
                          "(docs/reliability.md lists what a resumed run may change)")
