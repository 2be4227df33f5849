"""Files written so that a kill at any moment leaves the old version or the new one, whole, and files
read without running code: JSON, weights-only tensors. Run dirs, checkpoints, token stores and export
bundles all write and publish through here; `exclusive` keeps two processes out of one run dir or cache entry."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
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


def lock_path(target: Path) -> Path:
    """The lock file beside `target` (kept outside it, so that publishing `target` never moves it)."""
    return target.parent / f".{target.name}.lock"


def _holder(lock: Path) -> str:
    try:
        pid = lock.read_text().strip()
    except OSError:
        pid = ""
    return f"PID {pid}" if pid.isdigit() else "a process that has not yet written its PID"


@contextmanager
def exclusive(target: Path, what: str, wait: bool = False):
    """Hold an exclusive lock on `target` (a run dir, a token store) while the block runs.

    Another process holding it: refused naming its PID, or (`wait`) waited for with one message. The
    lock is a POSIX record lock (`lockf`) on `lock_path(target)`: the kernel drops it when the holder
    dies, so a killed run never leaves a stale lock behind (the file may stay; it means nothing unless
    locked). Not flock(2): its locks are shared with forked children (DataLoader workers), which can
    outlive a killed holder and keep the lock.
    """
    import errno
    import fcntl
    lock = lock_path(target)
    told = False
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UlmfitError(f"{what}: cannot write in {lock.parent} ({e.strerror})") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):  # a file system without locks (some NFS mounts)
                print(f"ulmfit: warning: cannot lock {lock} ({e.strerror}); make sure no other ulmfit process "
                      f"uses {what}", file=sys.stderr, flush=True)
                yield
                return
            if not wait:
                raise UlmfitError(f"{what} is in use by another ulmfit process ({_holder(lock)}); wait for it to "
                                  f"finish, or choose another folder") from None
            if not told:
                print(f"ulmfit: waiting for {_holder(lock)}, which is using {what}", file=sys.stderr, flush=True)
                told = True
            time.sleep(0.5)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino  # not a file a releasing holder just unlinked
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        try:
            os.unlink(lock)  # while still locked: a waiter that opened it re-checks the inode above
        except FileNotFoundError:
            pass
        os.close(fd)


def torch_load_safe(path: Path, refused: str):
    """`torch.load` with `weights_only=True`. A pickle that would run code becomes an UlmfitError
    `refused (reason)`; a file that is not whole (truncated copy, broken zip) says so instead."""
    import pickle

    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UlmfitError(f"{refused} ({_first_line(e)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UlmfitError(f"{path}: the file is damaged or truncated, not a whole PyTorch file ({_first_line(e)}); "
                          f"copy or write it again") from None


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_weights(path: Path) -> dict:
    """A plain state dict, loaded with `weights_only=True`: a pickle that would run code is refused."""
    import torch
    state = torch_load_safe(path, f"{path}: not a weights-only state dict, refused to load it")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UlmfitError(f"{path}: expected a state dict of tensors")
    return state
