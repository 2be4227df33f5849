"""Checkpoint files: written whole or not at all, read weights-only, and the metrics log cut back to
what a checkpoint covers."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch
from fastcore.foundation import L

from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import atomic_write, torch_load_safe

FORMAT = 2  # 2: the Recorder's state under "recorder" (1 kept "smooth_loss" and "lr_steps")


def plain(obj):
    """NumPy scalars (fastai's schedules make rates of them) as Python numbers, and fastai's tensor
    subclasses as plain tensors: a checkpoint must load with `weights_only=True`."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor) and type(obj) is not torch.Tensor:
        return obj.as_subclass(torch.Tensor)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, L)):  # fastai's optimizer state holds fastcore `L`s
        return (list if isinstance(obj, L) else type(obj))(plain(v) for v in obj)
    return obj


def write_checkpoint(state: dict, path: Path) -> None:
    """Write `state` to `path` so that `path` is always either the old file or the new one, whole."""
    state = plain(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))


def link_checkpoint(src: Path, dst: Path) -> None:
    """Make `dst` the same checkpoint as `src` (a hard link, atomically replacing `dst`)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        os.link(src, tmp)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def read_checkpoint(path: Path) -> dict:
    state = torch_load_safe(path, f"--resume: {path} is not a readable ulmfit checkpoint, refused to load it")
    if not isinstance(state, dict) or "format" not in state:
        raise UlmfitError(f"--resume: {path} is not a ulmfit checkpoint (format {FORMAT})")
    if state["format"] != FORMAT:
        raise UlmfitError(f"--resume: {path} is a checkpoint of format {state['format']}, this ulmfit reads "
                          f"format {FORMAT}; resume it with the ulmfit version that wrote it, or start "
                          f"the run afresh")
    return state


def clean_partial_writes(folder: Path) -> None:
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def truncate_lines(path: Path, n: int) -> None:
    """Drop what a killed run logged after its checkpoint (it is logged again when redone)."""
    if path.exists():
        lines = path.read_bytes().splitlines(keepends=True)[:n]
        path.write_bytes(b"".join(lines))
