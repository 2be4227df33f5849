"""Checkpoints during training, and resuming from them on the same schedule.

`checkpoints/last.pt` is rewritten at the end of every training epoch and, within long epochs,
every `train.checkpoint_every` steps or `train.checkpoint_minutes`; `checkpoints/best.pt` is
the epoch-end checkpoint with the lowest validation loss. A checkpoint holds the model, the
optimizer, the position in the stage's schedule (phase, epoch, batches done, one-cycle
fraction), the fp16 loss scale, the AWD-LSTM hidden state, the smoothed loss, and the random states (Python, NumPy,
torch, CUDA and the data loader's) both at the start of the epoch and at the step, so that a
resumed run draws the same data order, skips the batches already trained and goes on exactly
as the uninterrupted run would (bit for bit on the CPU).

Files are written to a temporary name in the same folder, fsynced and renamed: a kill at any
moment leaves the previous checkpoint whole. They are read with `weights_only=True` only.
A NaN or inf loss stops the run (`TrainingFailed`, exit 3) before any checkpoint could hold it.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from fastai.callback.core import Callback
from fastcore.foundation import L

from ulmfit_cli import distributed
from ulmfit_cli.distributed import unwrap
from ulmfit_cli.errors import TrainingFailed, UlmfitError
from ulmfit_cli.runs import atomic_write, torch_load_safe
from ulmfit_cli.loaders import StreamLMLoader

FORMAT = 1
NAN_CHECK_EVERY = 100  # steps between reads of the on-device NaN flag (each read waits for the GPU)

# Config keys a resumed run may change; anything else that differs from the checkpoint is refused.
RESUMABLE_CHANGES = (
    "run.name", "run.dir", "run.device", "run.precision", "run.deterministic",
    "data.workers", "data.cache_dir", "data.test",
    "train.epochs", "train.lr", "train.frozen_lr", "train.lr_div", "train.wd", "train.moms",
    "train.checkpoint_every", "train.checkpoint_minutes", "train.stages.*.epochs", "train.stages.*.lr",
)


# ---------------------------------------------------------------- what must not change
def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flatten(val, f"{prefix}{key}.").items()}
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        return {k: v for i, val in enumerate(obj) for k, v in _flatten(val, f"{prefix}{i}.").items()}
    return {prefix[:-1]: obj}


def fingerprint(cfg, data_signature: str) -> dict:
    """The config values (dotted keys) that fix the model, the vocab and the data, plus a digest of the data."""
    flat = _flatten(cfg.model_dump(mode="json"))
    kept = {k: v for k, v in flat.items() if not any(fnmatch.fnmatch(k, p) for p in RESUMABLE_CHANGES)}
    kept["data (tokens and vocab)"] = data_signature
    return kept


def data_signature(vocab: list[str], *arrays) -> str:
    digest = hashlib.sha256(json.dumps(vocab).encode())
    for a in arrays:
        digest.update(a.encode() if isinstance(a, str) else np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:16]


def _check_fingerprint(saved: dict, now: dict, path: Path) -> None:
    diff = [f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}"
            for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if diff:
        raise UlmfitError(f"--resume: {path} was trained with a different model, vocab or data:\n  "
                          + "\n  ".join(diff[:12]) + "\nput these back, or start a new run "
                          "(docs/reliability.md lists what a resumed run may change)")


# ---------------------------------------------------------------- random states
def rng_state() -> dict:
    legacy = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [legacy[0], torch.from_numpy(legacy[1].astype(np.int64)), *legacy[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def loader_state(dl) -> dict:
    if isinstance(dl, StreamLMLoader):
        return {"rng": dl.rng.bit_generator.state, "starts": list(dl.starts)}
    if isinstance(dl, distributed.ShardedDL):  # its order comes from a per-epoch seed
        return {"epochs_done": dl.epochs_done}
    return {"rng": dl.rng.getstate()}  # fastai's DataLoader: a random.Random (and the global RNGs)


def set_loader_state(dl, state: dict) -> None:
    if isinstance(dl, StreamLMLoader):
        dl.rng.bit_generator.state = state["rng"]
        dl.starts = list(state["starts"])
    elif isinstance(dl, distributed.ShardedDL):
        dl.epochs_done = state.get("epochs_done", 0)
    else:
        dl.rng.setstate(state["rng"])


class _SkipFirst:
    """`dl` without its first `k` batches (already trained), then `then()`; `len` stays the epoch's."""

    def __init__(self, dl, k: int, then: Callable[[], None]):
        self.dl, self.k, self.then = dl, k, then

    def __len__(self) -> int:
        return len(self.dl)

    def __iter__(self):
        it = iter(self.dl)
        for _ in range(self.k):
            next(it)
        self.then()
        yield from it

    def __getattr__(self, name):
        return getattr(self.dl, name)


# ---------------------------------------------------------------- files
class _SlowFile:
    """Test hook (ULMFIT_TEST_SLOW_CHECKPOINT=seconds): pause half-way through writing a checkpoint."""

    def __init__(self, f, pause: float):
        self.f, self.pause, self.written = f, pause, 0

    def write(self, data) -> int:
        if self.pause and self.written > 4096:
            time.sleep(self.pause)
            self.pause = 0
        self.written += len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def _plain(obj):
    """NumPy scalars (fastai's schedules make rates of them) as Python numbers, and fastai's tensor
    subclasses as plain tensors: a checkpoint must load with `weights_only=True`."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor) and type(obj) is not torch.Tensor:
        return obj.as_subclass(torch.Tensor)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, L)):  # fastai's optimizer state holds fastcore `L`s
        return (list if isinstance(obj, L) else type(obj))(_plain(v) for v in obj)
    return obj


def write_checkpoint(state: dict, path: Path) -> None:
    """Write `state` to `path` so that `path` is always either the old file or the new one, whole."""
    state = _plain(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    pause = float(os.environ.get("ULMFIT_TEST_SLOW_CHECKPOINT", "0") or 0)
    atomic_write(path, lambda f: torch.save(state, _SlowFile(f, pause) if pause else f))


def link_checkpoint(src: Path, dst: Path) -> None:
    """Make `dst` the same checkpoint as `src` (a hard link, atomically replacing `dst`)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        os.link(src, tmp)
    except OSError:  # a file system without hard links
        import shutil
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def read_checkpoint(path: Path) -> dict:
    state = torch_load_safe(path, f"--resume: {path} is not a readable ulmfit checkpoint, refused to load it")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UlmfitError(f"--resume: {path} is not a ulmfit checkpoint (format {FORMAT})")
    return state


def clean_partial_writes(folder: Path) -> None:
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- the callback
@dataclass
class Phase:
    """One `fit_one_cycle` of a stage, after `setup` (freeze/unfreeze) has run."""
    label: str
    epochs: int
    lr: float | slice
    setup: Callable = lambda learn: None


class Checkpointer(Callback):
    """Writes checkpoints, watches for NaN/inf losses without a per-step sync, and restores a resume."""
    order = 55  # after TrainEvalCallback counted the step, and the Recorder (50) and MetricsLog (51) logged it

    def __init__(self, folder: Path, fingerprint: dict, train_cfg, metrics_file: Path,
                 resume: dict | None = None):
        self.folder, self.fingerprint, self.metrics_file = folder, fingerprint, metrics_file
        self.every, self.minutes = train_cfg.checkpoint_every, train_cfg.checkpoint_minutes
        self.resume, self.phase, self.phase_label, self.step = resume, 0, "", 0
        self.best = resume.get("best_valid_loss") if resume else None
        self.nan_at = int(os.environ.get("ULMFIT_TEST_NAN_AT_STEP", "0") or 0)  # test hook
        # test hooks: pause after a checkpoint written in phase >= ULMFIT_TEST_PAUSE_IN_PHASE (so a test can kill it)
        self.pause_after = float(os.environ.get("ULMFIT_TEST_PAUSE_AFTER_CHECKPOINT", "0") or 0)
        self.pause_phase = int(os.environ.get("ULMFIT_TEST_PAUSE_IN_PHASE", "0") or 0)
        self._restoring = None

    # -- fit and epoch bookkeeping
    def before_fit(self):
        self.bad_step = None
        self.saved_at = time.monotonic()
        if self.resume is not None and self.resume["phase"] == self.phase:
            self._restoring, self.resume = self.resume, None
            self.learn.model.load_state_dict(self._restoring["model"])
            self.learn.opt.load_state_dict(self._restoring["opt"])
            if self._restoring.get("grad_scaler") and hasattr(self.learn, "scaler"):  # fp16 loss scale
                self.learn.scaler.load_state_dict(self._restoring["grad_scaler"])
            self.step = self._restoring["step"]

    def before_epoch(self):
        self.trained = False

    def before_train(self):
        self.trained, self.batches_done = True, 0
        r = self._restoring
        if r is not None and self.epoch == r["epoch"]:
            self._restoring = None
            self.restore_epoch_start(r)
            if r["batches_done"]:
                self.batches_done = r["batches_done"]
                self.learn.dl = _SkipFirst(self.dl, r["batches_done"], lambda: self._restore_step(r))
            else:
                set_rng_state(r["step_rng"])
            return
        self.epoch_start = {"rng": rng_state(), "loader": loader_state(self.dls.train)}

    def restore_epoch_start(self, r: dict) -> None:
        """The random and loader state at the start of the checkpoint's next (or current) epoch."""
        set_rng_state(r["epoch_start"]["rng"])
        set_loader_state(self.dls.train, r["epoch_start"]["loader"])
        self.epoch_start = r["epoch_start"]

    def _restore_step(self, r: dict) -> None:
        """After the skipped batches: the random state, the one-cycle position and the LSTM state at the step."""
        set_rng_state(r["step_rng"])
        self.learn.pct_train, self.learn.train_iter = r["pct_train"], r["train_iter"]
        smooth = self.recorder.smooth_loss
        smooth.val, smooth.count = r["smooth_loss"][0].to(self.dls.device), r["smooth_loss"][1]
        if hasattr(self.learn, "metrics_log"):
            self.learn.metrics_log.lr_steps = list(r.get("lr_steps", []))
        encoder = unwrap(self.learn.model)[0]
        if r.get("hidden") is not None and hasattr(encoder, "hidden"):
            rows = distributed.local_rows(r["hidden"][0][0].shape[1])  # all rows were saved; this rank's share
            encoder.hidden = [tuple(t[:, rows].to(self.dls.device) for t in hc) for hc in r["hidden"]]
            encoder.bs = rows.stop - rows.start

    # -- per step
    def after_loss(self):
        if self.nan_at and self.training and self.step + 1 == self.nan_at:
            self.learn.loss_grad = self.loss_grad * float("nan")
            self.learn.loss = self.loss * float("nan")

    def after_batch(self):
        if not self.training:
            return
        self.step += 1
        self.batches_done += 1
        finite = torch.isfinite(self.loss.detach()).all()
        self.bad_step = (torch.where(finite, -1, self.step) if self.bad_step is None
                         else torch.where((self.bad_step < 0) & ~finite, self.step, self.bad_step))
        if self.batches_done >= len(self.dl):
            return  # the epoch-end checkpoint follows validation
        due = (self.every and self.step % self.every == 0) or (
            self.minutes and time.monotonic() - self.saved_at >= self.minutes * 60)
        if due:
            self._save(epoch_end=False)
        elif self.step % NAN_CHECK_EVERY == 0:
            self._check_finite()

    def after_epoch(self):
        if not self.trained:
            return  # a `validate()` call, or an epoch skipped on resume
        valid = self.recorder.values[-1][1] if len(self.recorder.values[-1]) > 1 else None
        self._save(epoch_end=True, valid_loss=None if valid is None else float(valid))

    # -- checks and files
    def _check_finite(self) -> None:
        if self.bad_step is not None and int(self.bad_step) >= 0:  # one read of a device flag
            raise TrainingFailed(
                f"the training loss became NaN or infinite at step {int(self.bad_step)} "
                f"(epoch {self.epoch + 1}, {self.phase_label or 'training'}); the last good checkpoint is kept in "
                f"{self.folder}. Lower train.lr (or use run.precision=fp32) and rerun with --resume.")

    def _save(self, epoch_end: bool, valid_loss: float | None = None) -> None:
        self._check_finite()
        model = unwrap(self.learn.model)
        hidden = None if epoch_end else getattr(model[0], "hidden", None)
        if hidden is not None:  # every rank's rows (a collective: all ranks save together)
            hidden = [tuple(distributed.gather_rows(t.detach(), 1) for t in hc) for hc in hidden]
        if not distributed.world().main:
            return  # rank 0 writes
        smooth = self.recorder.smooth_loss
        step_rng = rng_state()
        state = {
            "format": FORMAT, "fingerprint": self.fingerprint, "phase": self.phase, "step": self.step,
            "epoch": self.epoch + 1 if epoch_end else self.epoch,
            "batches_done": 0 if epoch_end else self.batches_done,
            "train_iter": self.learn.train_iter, "pct_train": float(self.learn.pct_train),
            "model": model.state_dict(), "opt": self.learn.opt.state_dict(),
            "grad_scaler": self.learn.scaler.state_dict() if hasattr(self.learn, "scaler") else None,
            "hidden": hidden,
            "smooth_loss": (torch.as_tensor(smooth.val).detach().cpu(), smooth.count),
            # at an epoch end, the next epoch starts from the random state of this step
            "epoch_start": ({"rng": step_rng, "loader": loader_state(self.dls.train)} if epoch_end
                            else self.epoch_start),
            "step_rng": step_rng,
            "metrics_lines": _count_lines(self.metrics_file),
            "lr_steps": list(getattr(getattr(self.learn, "metrics_log", None), "lr_steps", [])),
            "valid_loss": valid_loss,
        }
        is_best = valid_loss is not None and (self.best is None or valid_loss < self.best)
        if is_best:
            self.best = valid_loss
        state["best_valid_loss"] = self.best
        last = self.folder / "last.pt"
        write_checkpoint(state, last)
        if is_best:
            link_checkpoint(last, self.folder / "best.pt")
        self.saved_at = time.monotonic()
        if self.pause_after and self.phase >= self.pause_phase:
            time.sleep(self.pause_after)


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def truncate_lines(path: Path, n: int) -> None:
    """Drop what a killed run logged after its checkpoint (it is logged again when redone)."""
    if path.exists():
        lines = path.read_bytes().splitlines(keepends=True)[:n]
        path.write_bytes(b"".join(lines))


def fit_phases(learn, ckpt: Checkpointer, phases: list[Phase]) -> None:
    """`fit_one_cycle` for each phase; on resume, skip what the checkpoint had finished."""
    resume = ckpt.resume
    for i, ph in enumerate(phases):
        ph.setup(learn)
        learn.metrics_log.phase = ckpt.phase_label = ph.label
        ckpt.phase = i
        if not ph.epochs:
            continue
        if resume is not None and i < resume["phase"]:
            continue
        if resume is not None and i == resume["phase"]:
            if resume["epoch"] >= ph.epochs:  # this phase was complete at the checkpoint
                learn.model.load_state_dict(resume["model"])
                ckpt.restore_epoch_start(resume)  # the next phase's first epoch, as if never stopped
                ckpt.step, ckpt.resume = resume["step"], None
                continue
            learn.fit_one_cycle(ph.epochs, ph.lr, start_epoch=resume["epoch"])
            continue
        learn.fit_one_cycle(ph.epochs, ph.lr)


def checkpointer(run, cfg, data_sig: str) -> Checkpointer:
    """The run's Checkpointer; with `--resume`, loaded from checkpoints/last.pt and checked against the config."""
    from ulmfit_cli.console import info
    fp = fingerprint(cfg, data_sig)
    folder, metrics = run.path / "checkpoints", run.path / "metrics.jsonl"
    resume = None
    if run.resume:
        path = folder / "last.pt"
        resume = read_checkpoint(path)
        _check_fingerprint(resume["fingerprint"], fp, path)
        truncate_lines(metrics, resume["metrics_lines"])
        clean_partial_writes(folder)
        where = (f"after {resume['batches_done']} batches of epoch {resume['epoch'] + 1}" if resume["batches_done"]
                 else f"at the start of epoch {resume['epoch'] + 1}")
        info(f"--resume: {path}: step {resume['step']}, phase {resume['phase'] + 1}, {where}")
    return Checkpointer(folder, fp, cfg.train, metrics, resume)
