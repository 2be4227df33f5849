"""Checkpoints during training, and resuming from them on the same schedule.

`checkpoints/last.pt` is rewritten at the end of every training epoch and, within long epochs,
every `train.checkpoint_every` steps or `train.checkpoint_minutes`; `checkpoints/best.pt` is the
epoch-end checkpoint with the best `train.monitor` (the lowest validation loss by default), which
`load_best` puts back for `train.keep: best`; `train.patience` ends the stage after that many epochs
without a better one. As accelerate's checkpointing does, the
Checkpointer only collects `state_dict()`s: of the model, the optimizer, the fp16 GradScaler, the
training loader, the global random generators (`GlobalRNG`) and the Recorder's running figures;
plus the position in the stage's schedule (phase, epoch, batches done, one-cycle fraction) and the
AWD-LSTM hidden state. Random and loader states are kept both at the start of the epoch and at the
step, so that a resumed run draws the same data order, skips the batches already trained and goes
on exactly as the uninterrupted run would (bit for bit on the CPU).

Why not fastai's SaveModelCallback for `best.pt`: it saves the model alone (and through `torch.save`
of the learner's own objects), where a resumable checkpoint needs all of the above, written atomically.
Why not fastai's EarlyStoppingCallback for `train.patience`: it starts counting afresh at every
`fit_one_cycle`, and a stage with gradual unfreezing is several; here the count spans the stage and
survives `--resume`.
Why our own mid-epoch resume: fastai's `fit_one_cycle(start_epoch=)` resumes only at epoch boundaries
and restores no random state.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from fastai.callback.core import Callback, CancelFitException

from ulmfit_cli.console import info
from ulmfit_cli.tasks import LOWER_IS_BETTER, SINGLE, monitor_column
from ulmfit_cli.train import distributed
from ulmfit_cli.train.callbacks import NanWatch, epoch_figures, stacked
from ulmfit_cli.train.checkpoint_files import (FORMAT, clean_partial_writes, count_lines, link_checkpoint,
                                               read_checkpoint, truncate_lines, write_checkpoint)
from ulmfit_cli.train.distributed import unwrap
from ulmfit_cli.train.fingerprint import check_fingerprint, fingerprint
from ulmfit_cli.train.rng import GlobalRNG



@dataclass
class Phase:
    """One `fit_one_cycle` of a stage, after `setup` (freeze/unfreeze) has run."""
    label: str
    epochs: int
    lr: float | slice
    setup: Callable = lambda learn: None


@dataclass
class Plan:
    """A stage ready to train (what `ulmfit lr-find` also takes): its learner, its phases, the digest of its
    data that a resume must match, and what it writes once trained (`finish(checkpointer) -> results`)."""
    learn: Any
    phases: list[Phase]
    data_sig: str
    finish: Callable


def fit_plan(plan: Plan, run, cfg) -> dict:
    """Train a stage's plan with checkpoints (and `--resume`) into `run`; return its results."""
    ckpt = add_checkpointing(plan.learn, run, cfg, plan.data_sig)
    ckpt.fit_phases(plan.phases)
    return plan.finish(ckpt)


class _SkipFirst:
    """`dl` without its first `k` batches (already trained), then `then()`; `len` stays the epoch's, so
    the one-cycle schedule is the uninterrupted run's (accelerate's `skip_first_batches` for fastai)."""

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


class _RecorderState:
    """fastai's Recorder has no state_dict: its smoothed loss and this epoch's per-step rates and losses
    (which MetricsLog logs at the epoch's end)."""

    def __init__(self, learn):
        self.learn = learn

    def state_dict(self) -> dict:
        rec, first = self.learn.recorder, self.learn.metrics_log.first
        smooth = rec.smooth_loss
        losses = rec.losses[first:]
        return {"smooth_loss": (torch.as_tensor(smooth.val).detach().cpu(), smooth.count),
                "lrs": list(rec.lrs[first:]),
                "losses": stacked(losses) if losses else None}

    def load_state_dict(self, state: dict) -> None:
        rec, device = self.learn.recorder, self.learn.dls.device
        rec.smooth_loss.val, rec.smooth_loss.count = state["smooth_loss"][0].to(device), state["smooth_loss"][1]
        rec.lrs = list(state["lrs"])  # a resumed fit starts at this epoch: its steps so far
        rec.losses = [] if state["losses"] is None else list(state["losses"].to(device))


class Checkpointer(Callback):
    """Writes checkpoints and restores a resumed run; `fit_phases` runs a stage's schedule through it."""
    order = 55  # after TrainEvalCallback counted the step, the Recorder (50) and MetricsLog (51) logged it

    def __init__(self, folder: Path, fingerprint: dict, train_cfg, metrics_file: Path, resume: dict | None = None,
                 task: str = SINGLE):
        self.folder, self.fingerprint, self.metrics_file = folder, fingerprint, metrics_file
        self.every, self.minutes = train_cfg.checkpoint_every, train_cfg.checkpoint_minutes
        self.resume, self.phase, self.phase_label, self.step = resume, 0, "", 0
        self.monitor = getattr(train_cfg, "monitor", "valid_loss")
        self.column = monitor_column(task, self.monitor)  # the Recorder's name for it
        self.patience = getattr(train_cfg, "patience", None)
        self.best = resume.get("best", resume.get("best_valid_loss")) if resume else None
        self.best_epoch = resume.get("best_epoch") if resume else None
        self.since_best = resume.get("since_best", 0) if resume else 0
        self.stopped = False                    # train.patience ended the stage
        self.epochs_before = 0                  # epochs of the stage's earlier phases
        self.last_epoch = 0                     # the stage's last trained epoch (1-based)
        self.saves = 0                          # checkpoints written by this process
        self.write_file = write_checkpoint      # (state, path): a test may slow it down to kill a write
        self._restoring = None

    def stateful(self) -> dict:
        """What is saved and restored through `state_dict`/`load_state_dict` (None: absent in this run)."""
        return {"model": unwrap(self.learn.model), "opt": self.learn.opt,
                "grad_scaler": getattr(self.learn, "scaler", None), "recorder": _RecorderState(self.learn)}

    # -- the stage's schedule
    def fit_phases(self, phases: list[Phase]) -> None:
        """`fit_one_cycle` for each phase; on resume, skip what the checkpoint had finished."""
        learn, resume = self.learn, self.resume
        for i, ph in enumerate(phases):
            if self.stopped:
                break
            ph.setup(learn)
            learn.metrics_log.phase = self.phase_label = ph.label
            self.phase, self.epochs_before = i, sum(p.epochs for p in phases[:i])
            if not ph.epochs or (resume is not None and i < resume["phase"]):
                continue
            if resume is not None and i == resume["phase"]:
                if resume["epoch"] >= ph.epochs:  # this phase was complete at the checkpoint
                    unwrap(learn.model).load_state_dict(resume["model"])
                    self.restore_epoch_start(resume)  # the next phase's first epoch, as if never stopped
                    self.step, self.resume = resume["step"], None
                    continue
                learn.fit_one_cycle(ph.epochs, ph.lr, start_epoch=resume["epoch"])
                continue
            learn.fit_one_cycle(ph.epochs, ph.lr)

    # -- fit and epoch bookkeeping
    def before_fit(self):
        self.saved_at = time.monotonic()
        if self.resume is not None and self.resume["phase"] == self.phase:
            self._restoring, self.resume = self.resume, None
            for name, obj in self.stateful().items():
                if name != "recorder" and obj is not None and self._restoring.get(name) is not None:
                    obj.load_state_dict(self._restoring[name])
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
                GlobalRNG.load_state_dict(r["step_rng"])
                _RecorderState(self.learn).load_state_dict(r["recorder"])
            return
        self.epoch_start = {"rng": GlobalRNG.state_dict(), "loader": self.dls.train.state_dict()}

    def restore_epoch_start(self, r: dict) -> None:
        """The random and loader state at the start of the checkpoint's next (or current) epoch."""
        GlobalRNG.load_state_dict(r["epoch_start"]["rng"])
        self.dls.train.load_state_dict(r["epoch_start"]["loader"])
        self.epoch_start = r["epoch_start"]

    def _restore_step(self, r: dict) -> None:
        """After the skipped batches: the random state, the one-cycle position, the Recorder's figures and
        the LSTM state at the step."""
        GlobalRNG.load_state_dict(r["step_rng"])
        self.learn.pct_train, self.learn.train_iter = r["pct_train"], r["train_iter"]
        _RecorderState(self.learn).load_state_dict(r["recorder"])
        encoder = unwrap(self.learn.model)[0]
        if r.get("hidden") is not None and hasattr(encoder, "hidden"):
            rows = distributed.local_rows(r["hidden"][0][0].shape[1])  # all rows were saved; this rank's share
            encoder.hidden = [tuple(t[:, rows].to(self.dls.device) for t in hc) for hc in r["hidden"]]
            encoder.bs = rows.stop - rows.start

    # -- per step
    def before_batch(self):
        if self.training:
            self.step += 1

    def after_batch(self):
        if not self.training:
            return
        self.batches_done += 1
        if self.batches_done >= len(self.dl):
            return  # the epoch-end checkpoint follows validation
        due = (self.every and self.step % self.every == 0) or (
            self.minutes and time.monotonic() - self.saved_at >= self.minutes * 60)
        if due:
            self._save(epoch_end=False)

    def after_epoch(self):
        if not self.trained:
            return  # a `validate()` call, or an epoch skipped on resume
        self.last_epoch = self.epochs_before + self.epoch + 1
        value = epoch_figures(self.recorder).get(self.column)
        self._save(epoch_end=True, value=None if value is None else float(value))
        # rank 0 keeps the score (only it writes checkpoints): every rank follows it, or a rank that thinks
        # there is no best epoch, or no reason to stop, waits forever for the others
        self.best, self.best_epoch, self.since_best = distributed.from_main(
            lambda: (self.best, self.best_epoch, self.since_best))
        if self.patience and self.since_best >= self.patience:
            self.stopped = True
            info(f"train.patience: no better {self.monitor} for {self.since_best} epochs; the stage ends after "
                 f"epoch {self.last_epoch} (best: epoch {self.best_epoch})")
            raise CancelFitException()  # as fastai's EarlyStoppingCallback ends a fit

    def load_best(self) -> int | None:
        """Put the model of checkpoints/best.pt back (`train.keep: best`); returns its epoch in the stage."""
        if self.best_epoch is None:
            return None
        state = distributed.from_main(lambda: read_checkpoint(self.folder / "best.pt")["model"])
        unwrap(self.learn.model).load_state_dict(state)
        return self.best_epoch

    # -- the file
    def _better(self, value: float) -> bool:
        if value != value:  # NaN (a correlation of constant predictions) is never the best
            return False
        return self.best is None or (value < self.best if self.monitor in LOWER_IS_BETTER else value > self.best)

    def _save(self, epoch_end: bool, value: float | None = None) -> None:
        self.learn.nan_watch.check()
        model = unwrap(self.learn.model)
        hidden = None if epoch_end else getattr(model[0], "hidden", None)
        if hidden is not None:  # every rank's rows (a collective: all ranks save together)
            hidden = [tuple(distributed.gather_rows(t.detach(), 1) for t in hc) for hc in hidden]
        if not distributed.is_main():
            return  # rank 0 writes
        step_rng = GlobalRNG.state_dict()
        state = {name: None if obj is None else obj.state_dict() for name, obj in self.stateful().items()}
        if epoch_end:  # the next epoch starts with no steps of its own
            state["recorder"].update(lrs=[], losses=None)
        state.update({
            "format": FORMAT, "fingerprint": self.fingerprint, "phase": self.phase, "step": self.step,
            "epoch": self.epoch + 1 if epoch_end else self.epoch,
            "batches_done": 0 if epoch_end else self.batches_done,
            "train_iter": self.learn.train_iter, "pct_train": float(self.learn.pct_train),
            "hidden": hidden,
            # at an epoch end, the next epoch starts from the random state of this step
            "epoch_start": ({"rng": step_rng, "loader": self.dls.train.state_dict()} if epoch_end
                            else self.epoch_start),
            "step_rng": step_rng,
            "metrics_lines": count_lines(self.metrics_file),
            "monitored": value,
        })
        is_best = epoch_end and value is not None and self._better(value)
        if is_best:
            self.best, self.best_epoch, self.since_best = value, self.last_epoch, 0
        elif epoch_end:
            self.since_best += 1
        state.update({"monitor": self.monitor, "best": self.best, "best_epoch": self.best_epoch,
                      "since_best": self.since_best})
        last = self.folder / "last.pt"
        self.write_file(state, last)
        if is_best:
            link_checkpoint(last, self.folder / "best.pt")
        self.saved_at = time.monotonic()
        self.saves += 1


def add_checkpointing(learn, run, cfg, data_sig: str) -> Checkpointer:
    """Give `learn` the run's Checkpointer and NaN watch; with `--resume`, the checkpoint is read from
    checkpoints/last.pt and checked against the config."""
    fp = fingerprint(cfg, data_sig)
    folder, metrics = run.path / "checkpoints", run.path / "metrics.jsonl"
    resume = None
    if run.resume:
        path = folder / "last.pt"
        resume = read_checkpoint(path)
        check_fingerprint(resume["fingerprint"], fp, path)
        if distributed.is_main():  # rank 0 alone writes the run dir
            truncate_lines(metrics, resume["metrics_lines"])
            clean_partial_writes(folder)
        where = (f"after {resume['batches_done']} batches of epoch {resume['epoch'] + 1}" if resume["batches_done"]
                 else f"at the start of epoch {resume['epoch'] + 1}")
        info(f"--resume: {path}: step {resume['step']}, phase {resume['phase'] + 1}, {where}")
    ckpt = Checkpointer(folder, fp, cfg.train, metrics, resume, getattr(cfg, "task", SINGLE))
    learn.add_cbs([NanWatch(), ckpt])
    return ckpt
