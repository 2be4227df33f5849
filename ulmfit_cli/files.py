"""Files written so that a kill at any moment leaves the old version or the new one, whole, and files
read without running code: JSON, weights-only tensors, token lists through an unpickler that admits
plain data only, archives unpacked only below their destination; and the input paths configs name.

`staged` is the one protocol for writing a folder as a whole: run dirs, forward+backward pairs, export
bundles, token stores and tune dirs all take it (the lock, the refusals of --force and --resume, the
staging folder, publishing); `exclusive` keeps two processes out of one of them."""
from __future__ import annotations

import contextvars
import errno
import fcntl
import hashlib
import importlib.util
import json
import os
import pickle
import re
import shutil
import sys
import tarfile
import time
import zipfile
from collections import Counter
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable

from ulmfit_cli.errors import Abandoned, UlmfitError

PKG_PREFIX = "pkg:"

# ---------------------------------------------------------------- a command's inputs are never its outputs
# {resolved path: what named it} of the command running (`command_inputs`); None outside a command
_INPUTS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("ulmfit_inputs", default=None)


@contextmanager
def command_inputs():
    """The scope of one command (an API call): what it reads (`reads`) it may not write over
    (`check_writable`).
    A command run inside another (a tune trial, a pair's member) shares the outer one's inputs."""
    if _INPUTS.get() is not None:
        yield
        return
    token = _INPUTS.set({})
    try:
        yield
    finally:
        _INPUTS.reset(token)


def reads(path, what: str) -> None:
    """Record `path` (a file or folder the command reads: a config file, data, an upstream run, a --model, the
    --input, an import source) as an input of the running command."""
    inputs = _INPUTS.get()
    if inputs is not None and str(path) not in ("", "-"):
        inputs.setdefault(Path(path).expanduser().resolve(), what)


def check_writable(output: Path, what: str, replaced: bool = True) -> None:
    """Refuse to write or replace `output` (named `what`, e.g. "run dir runs/x") when it is, contains or sits
    inside an input of the running command (through symlinks too; even with --force): the one place that
    rule lives, called by `staged` and `atomic_write`. `replaced=False`: a folder only written into (what
    it already holds is kept), which may hold inputs."""
    out = Path(output).expanduser().resolve()
    for path, named in (_INPUTS.get() or {}).items():
        how = ("is" if out == path else "contains" if out in path.parents and replaced else
               "is inside" if path in out.parents else None)
        if how:
            raise UlmfitError(f"{what} {how} {named} {path}, which this command reads: a command never "
                              f"writes over its inputs, not even with --force; choose another path")


def input_path(value: str, key: str) -> Path:
    """The file or folder a config value names: a plain path, or `pkg:PACKAGE/sub/path` for a file shipped
    inside an installed Python package (how the embedded demo reads gensim's test data without a
    download); raises a `UlmfitError` naming `key` if absent."""
    if value.startswith(PKG_PREFIX):
        package, _, rest = value[len(PKG_PREFIX):].partition("/")
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            hint = " (install the demo extra: pip install -e '.[demo]')" if package == "gensim" else ""
            raise UlmfitError(f"{key}: {value}: Python package '{package}' is not installed{hint}")
        path = Path(list(spec.submodule_search_locations)[0]) / rest
    else:
        path = Path(value).expanduser()
    if not path.exists():
        raise UlmfitError(f"{key}: file not found: {path}")
    reads(path, key)
    return path


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
    or the new one, whole, whenever the process dies. A path that is (or is in, or holds) an input of the
    running command is refused (`check_writable`)."""
    check_writable(path, f"output {path}")
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


def sha256(path: Path) -> str:
    """A file's sha256 (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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


def check_output(output: Path, folder: bool) -> None:
    """An output never touches an input of the command (`check_writable`), and its parent folder exists
    after this (`folder`: the output is a folder, else a file; `-` is standard output)."""
    if str(output) == "-":
        return
    if not folder and output.is_dir():  # a folder is never a file's name, whatever it holds
        raise UlmfitError(f"--output: {output} is a folder; give a file name, e.g. {output / 'preds.csv'}")
    check_writable(output, f"--output {output}", replaced=not folder)  # evaluate writes files into a folder
    if folder and output.exists() and not output.is_dir():
        raise UlmfitError(f"--output: {output} is a file; evaluate writes a folder (report.json, "
                          f"confusion.png, probabilities.npy)")
    try:
        (output if folder else output.parent).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UlmfitError(f"--output: cannot create the folder for {output} ({e.strerror})") from None


RESUME_AND_FORCE = "--resume and --force contradict each other: --force starts the run afresh"


def occupied(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


@contextmanager
def staged(final: Path, what: str, force: bool = False, resume: bool = False,
           resumable: Callable[[Path], bool] | None = None, in_place: bool = False,
           locked: bool = False, kept_message: bool = False):
    """Write the folder `final` as a whole: yield the folder to write into (the staging folder
    `staging_dir(final)`), and `publish` it as `final` when the block ends without an error.

    `final` is locked for the block (`exclusive`; `locked`: the caller holds the lock). A non-empty `final`
    is refused without `force` (and is kept until the new folder is published). `resumable(folder)` says
    whether a folder holds an unfinished write that `resume` can continue: with `resume` the staging folder
    is continued as it is, or (when only `final` is resumable) a copy of `final`; without it, a resumable
    staging folder is refused unless `force`. On a failure: a given-up run (`Abandoned`) is removed; bad
    input (`UlmfitError`) too, unless the staging folder is resumable and not a copy of `final`; any other
    error (a crash, Ctrl-C, a kill) keeps the staging folder when `resumable` is given (`kept_message`
    says so on stderr, and whether it can be resumed), else removes it. `in_place`: the folder grows
    where it is (a tune dir, whose storage `--resume` continues): the same lock and refusals, `force`
    empties it, nothing is staged or published.
    """
    if resume and force:
        raise UlmfitError(RESUME_AND_FORCE)
    final = Path(final)
    check_writable(final, what)
    check_writable(staging_dir(final), what)  # emptied on a fresh start, replaced on a resume
    with (nullcontext() if locked else exclusive(final, what)):
        if final.exists() and not final.is_dir():
            raise UlmfitError(f"{what} exists and is not a directory")
        can_resume = resumable or (lambda folder: False)
        if in_place:
            if occupied(final) and not resume:
                if not force:
                    raise UlmfitError(f"{what} is not empty: --resume continues it, --force starts afresh")
                shutil.rmtree(final)
            final.mkdir(parents=True, exist_ok=True)
            yield final
            return
        staging, copied = staging_dir(final), False
        if resume:
            if not can_resume(staging):
                if not can_resume(final):
                    raise UlmfitError(f"--resume: nothing to continue in {staging} or {final}")
                shutil.rmtree(staging, ignore_errors=True)
                shutil.copytree(final, staging)  # the finished folder stays untouched until this one is done
                copied = True
        else:
            if occupied(final) and not force:
                raise UlmfitError(f"{what} is not empty: pass --force to replace it (it is kept until the "
                                  f"new one is finished), or choose another folder")
            if can_resume(staging) and not force:
                raise UlmfitError(f"{staging} holds an unfinished run with checkpoints: pass --resume to "
                                  f"continue it, or --force to discard it")
            shutil.rmtree(staging, ignore_errors=True)  # left by a crash with nothing to resume (or --force)
            staging.mkdir(parents=True)
        try:
            yield staging
        except Abandoned:  # given up on purpose (a pruned trial): quietly
            shutil.rmtree(staging, ignore_errors=True)
            raise
        except UlmfitError:
            if copied or not can_resume(staging):
                shutil.rmtree(staging, ignore_errors=True)  # bad input before any training: leave no trace
            raise
        except BaseException:
            if resumable is None:
                shutil.rmtree(staging, ignore_errors=True)
            elif kept_message:
                how = "resume it with --resume" if can_resume(staging) else "it has no checkpoint yet"
                print(f"ulmfit: the unfinished run is kept in {staging} ({how}); {final} is unchanged",
                      file=sys.stderr)
            raise
        publish(staging, final)


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
                print(f"ulmfit: warning: cannot lock {lock} ({e.strerror}); make sure no other ulmfit "
                      f"process uses {what}", file=sys.stderr, flush=True)
                yield
                return
            if not wait:
                raise UlmfitError(f"{what} is in use by another ulmfit process ({_holder(lock)}); wait for "
                                  f"it to finish, or choose another folder") from None
            if not told:
                print(f"ulmfit: waiting for {_holder(lock)}, which is using {what}", file=sys.stderr,
                      flush=True)
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


def torch_load_safe(path: Path, refused: str, containers: tuple = ()):
    """`torch.load` with `weights_only=True`. A pickle that would run code becomes an UlmfitError
    `refused (reason)`; a file that is not whole (truncated copy, broken zip) says so instead.
    `containers`: list-like classes to admit too (fastcore's `L` in the optimizer state `learn.save`
    writes)."""
    import torch  # here, not at the top: the runtime of an exported model reads files without torch
    try:
        with torch.serialization.safe_globals(list(containers)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message advises loading with weights_only=False: never repeat that; say what it names
        named = re.search(r"GLOBAL (\S+)", str(e))  # a pickle naming a class or function: code it would run
        if named:
            raise UlmfitError(f"{refused} (it names {named[1]}, and only tensors are accepted)") from None
        raise _damaged(path, e) from None  # random bytes also fail as 'Unsupported operand' and the like
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as e:  # random bytes fail inside torch's unpickler in many ways
        raise _damaged(path, e) from None


def _damaged(path: Path, e: Exception) -> UlmfitError:
    why = _first_line(e)
    why = type(e).__name__ if "weights_only" in why else f"{type(e).__name__}: {why}"  # not torch's advice
    return UlmfitError(f"{path}: the file is damaged or truncated, not a whole PyTorch file ({why}); copy or "
                       f"write it again")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_weights(path: Path) -> dict:
    """A plain state dict, loaded with `weights_only=True`: a pickle that would run code is refused."""
    import torch  # as in torch_load_safe
    state = torch_load_safe(path, f"{path}: not a weights-only state dict, refused to load it")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UlmfitError(f"{path}: expected a state dict of tensors")
    return state


class _PlainData(pickle.Unpickler):
    """Resolves no global at all: a pickle can build only lists, tuples, dicts, strings and numbers; one that
    names a class or function (which is how a pickle runs code) is refused before anything runs."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it names {module}.{name}, and only plain data is accepted")


def load_token_list(path: Path, what: str) -> list[str]:
    """A vocabulary pickled as fastai saves it (a list or tuple of token strings), read without running
    any code: the unpickler resolves no class or function. Anything else is refused."""
    try:
        with open(path, "rb") as f:
            tokens = _PlainData(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as e:
        raise UlmfitError(f"{what}: {path} is not a pickled list of tokens, refused to load it "
                          f"({_first_line(e)})") from None
    return check_tokens(tokens, path, what)


def read_token_json(path: Path, what: str) -> list[str]:
    """A vocabulary saved as a JSON list of token strings (vocab.json)."""
    return check_tokens(read_json(path, what), path, what)


def check_tokens(tokens, path: Path, what: str) -> list[str]:
    if not (isinstance(tokens, (list, tuple)) and tokens and all(isinstance(t, str) for t in tokens)):
        raise UlmfitError(f"{what}: {path} holds a {type(tokens).__name__}, not a list of token strings")
    # fastai pads a vocabulary to a multiple of 8 with 'xxfake'; any other token twice has an id never used
    twice = [t for t, n in Counter(tokens).items() if n > 1 and t != "xxfake"]
    if twice:
        raise UlmfitError(f"{what}: {path} lists {len(twice):,} token(s) more than once (e.g. {twice[0]!r}); "
                          f"a vocabulary has each token once")
    return list(tokens)


ARCHIVES = (".tgz", ".tar.gz", ".tar", ".zip")


def extract_archive(archive: Path, dest: Path, what: str) -> None:
    """Unpack a .tgz/.tar.gz/.tar/.zip into `dest`, refusing any member that would land outside it (an
    absolute path, `..`), links and device files: an archive from the internet writes only below `dest`."""

    def check(name: str) -> None:
        parts = Path(name).parts
        if (name.startswith(("/", "\\")) or Path(name).is_absolute() or ".." in parts
                or (parts and ":" in parts[0])):
            raise UlmfitError(f"{what}: {archive} holds a member outside the archive ({name!r}); refused to "
                              f"unpack it")
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    check(info.filename)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise UlmfitError(f"{what}: {archive}: member {info.filename!r} is a link; refused")
                z.extractall(dest)
        else:
            with tarfile.open(archive) as t:
                members = t.getmembers()
                for m in members:
                    check(m.name)
                    if not (m.isfile() or m.isdir()):
                        raise UlmfitError(f"{what}: {archive}: member {m.name!r} is a link or "
                                          f"device; refused")
                t.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise UlmfitError(f"{what}: {archive} is not a readable archive ({_first_line(e)})") from None
