"""Files written so that a kill at any moment leaves the old version or the new one, whole, and files
read without running code: JSON, weights-only tensors. Run dirs, checkpoints, token stores and export
bundles all write and publish through here."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ulmfit_cli.errors import UlmfitError


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """`write(f)` into a temporary file beside `path`, fsync, rename: `path` is always the old file
    or the new one, whole, whenever the process dies."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: Path, obj) -> None:
    data = (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def read_json(path: Path, key: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UlmfitError(f"{key}: {path} is not valid JSON: {e}") from None


def staging_dir(final: Path) -> Path:
    """Where `final` is built before `publish` moves it into place."""
    return final.parent / f".{final.name}.partial"


def publish(staging: Path, final: Path) -> None:
    """Rename a finished staging folder to `final`. A previous `final` (folder or file) is moved aside
    first and removed after, so at every moment one of the two is whole."""
    fsync_dir(staging)
    if not final.exists():
        os.replace(staging, final)
        return
    old = final.parent / f".{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old) if old.is_dir() else old.unlink()


def torch_load_safe(path: Path, refused: str):
    """`torch.load` with `weights_only=True`; a file it refuses (a pickle that would run code, a broken
    file) becomes an UlmfitError `refused (reason)`."""
    import pickle

    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UlmfitError(f"{refused} ({first})") from None


def load_weights(path: Path) -> dict:
    """A plain state dict, loaded with `weights_only=True`: a pickle that would run code is refused."""
    import torch
    state = torch_load_safe(path, f"{path}: not a weights-only state dict, refused to load it")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UlmfitError(f"{path}: expected a state dict of tensors")
    return state
