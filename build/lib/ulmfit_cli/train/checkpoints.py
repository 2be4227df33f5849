"""Training a stage's plan: the phases run by `fit_phases` (a plain function), and the callbacks it composes,
one concern each, as fastai's `tracker.py` splits `TrackerCallback`, `EarlyStoppingCallback` and
`SaveModelCallback`:

- `BestTracker`: the best `train.monitor` figure over every phase of the stage, and its epoch;
- `EarlyStopping`: `train.patience` epochs without a better one end the stage;
- `Checkpointer`: `checkpoints/last.pt` at the end of every training epoch and, within long epochs, every
  `train.checkpoint_every` steps or `train.checkpoint_minutes` (`checkpoints/best.pt` is the epoch-end one
  with the best figure), and a resumed run restored from it.

They share state only through what they are given: the stage's `Position` (phase, step); EarlyStopping
reads the tracker it is given, and the Checkpointer saves that tracker's `state_dict`. As accelerate's
checkpointing does, the Checkpointer only collects `state_dict()`s: of the model, the optimizer, the fp16
GradScaler, the training loader, the global random generators (`GlobalRNG`), the Recorder's running figures
and `BestTracker`'s; plus the position in the schedule (phase, epoch, batches done, one-cycle fraction) and
the AWD-LSTM hidden state. Random and loader states are kept both at the start of the epoch and at the step,
so that a resumed run draws the same data order, skips the batches already trained and goes on exactly as
the uninterrupted run would (bit for bit on the CPU).

Why not fastai's SaveModelCallback for `best.pt`: it saves the model alone (and through `torch.save`
of the learner's own objects), where a resumable checkpoint needs all of the above, written atomically.
Why not fastai's EarlyStoppingCallback for `train.patience`: it starts counting afresh at every
`fit_one_cycle`, and a stage with gradual unfreezing is several; here the count spans the stage and
survives `--resume`. Why our own mid-epoch resume: fastai's `fit_one_cycle(start_epoch=)` resumes only at
epoch boundaries and restores no random state.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from fastai.callback.core import Callback, CancelFitException

from ulmfit_cli.console import info
from ulmfit_cli.layout import BEST_CHECKPOINT, CHECKPOINTS, LAST_CHECKPOINT, METRICS
from ulmfit_cli.train import distributed
from ulmfit_cli.train.callbacks import MetricsLog, NanWatch, Position, TrainingEpochs, epoch_figures, stacked
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


@dataclass(frozen=True)
class Monitor:
    """The validation figure that picks a stage's best epoch: its name (`train.monitor`), the Recorder's
    column for it (the metric's name), and whether lower is better."""
    name: str = "valid_loss"
    column: str = "valid_loss"
    lower_is_better: bool = True


@dataclass
class Plan:
    """A stage ready to train (what `ulmfit lr-find` also takes): its learner, its phases, the digest of its
    data that a resume must match, what it writes once trained (`finish(outcome) -> results`), and the
    figure that picks its best epoch."""
    learn: Any
    phases: list[Phase]
    data_sig: str
    finish: Callable
    monitor: Monitor = field(default_factory=Monitor)


@dataclass
class Outcome:
    """How a stage's training went, for its `finish`: the last epoch trained, the best one by the monitor (and
    `load_best()`, which puts its weights back), and whether `train.patience` stopped it."""
    last_epoch: int
    best: float | None
    best_epoch: int | None
    stopped: bool
    load_best: Callable[[], int | None]


def fit_plan(plan: Plan, run, cfg) -> dict:
    """Train a stage's plan with checkpoints (and `--resume`) into `run`; return its results."""
    learn, log, position = plan.learn, plan.learn.metrics_log, Position()
    folder, fp = run.path / CHECKPOINTS, fingerprint(cfg, plan.data_sig)
    resume = _read_resume(run, folder, fp)
    best = BestTracker(plan.monitor, position)
    patience = EarlyStopping(getattr(cfg.train, "patience", None), best)
    if resume is not None:
        best.load_state_dict(resume)
    nan_watch = NanWatch(position, folder)
    ckpt = Checkpointer(folder, fp, cfg.train, run.path / METRICS, position, log,
                        best, nan_watch.check, resume)
    learn.add_cbs([best, patience, nan_watch, ckpt])
    fit_phases(learn, plan.phases, position, log, ckpt, patience, resume)

    def load_best() -> int | None:
        """Put the model of checkpoints/best.pt back (`train.keep: best`); returns its epoch in the stage."""
        if best.best_epoch is None:
            return None
        state = distributed.from_main(lambda: read_checkpoint(folder / BEST_CHECKPOINT)["model"])
        unwrap(learn.model).load_state_dict(state)
        return best.best_epoch
    return plan.finish(Outcome(best.last_epoch, best.best, best.best_epoch, patience.stopped, load_best))


class _KeepBest(TrainingEpochs):
    """The weights of the best epoch so far, in memory (for a fit without checkpoints)."""
    order = 54  # after BestTracker (53) has judged the epoch

    def __init__(self, best: BestTracker):
        self.best, self.state = best, None

    def after_epoch(self):
        if self.trained and self.best.new_best:
            self.state = {k: v.detach().clone() for k, v in unwrap(self.learn.model).state_dict().items()}


def fit_in_memory(learn, phases: list[Phase], monitor: Monitor, patience: int | None, folder: Path,
                  keep_best: bool) -> int:
    """The phases with the stage's trackers (best epoch, patience, NaN) but no checkpoint: for a fit that is
    cheap to redo whole on --resume (a self-training round). With `keep_best`, the best epoch's weights are
    put back at the end. Returns the epoch the model holds (1-based)."""
    position = Position()
    best = BestTracker(monitor, position)
    stop = EarlyStopping(patience, best)
    keeper, nan_watch = _KeepBest(best), NanWatch(position, folder)
    learn.add_cbs([best, stop, nan_watch, keeper])
    fit_phases(learn, phases, position, learn.metrics_log, None, stop)
    nan_watch.check()  # no checkpoint reads the flag here
    if keep_best and keeper.state is not None:
        unwrap(learn.model).load_state_dict(keeper.state)
        return best.best_epoch
    return best.last_epoch


def _read_resume(run, folder: Path, fp: dict) -> dict | None:
    """With `--resume`: checkpoints/last.pt, checked against the config, and metrics.jsonl cut back to it."""
    if not run.resume:
        return None
    path = folder / LAST_CHECKPOINT
    resume = read_checkpoint(path)
    check_fingerprint(resume["fingerprint"], fp, path)
    if distributed.is_main():  # rank 0 alone writes the run dir
        truncate_lines(run.path / METRICS, resume["metrics_lines"])
        clean_partial_writes(folder)
    where = (f"after {resume['batches_done']} batches of epoch {resume['epoch'] + 1}"
             if resume["batches_done"]
             else f"at the start of epoch {resume['epoch'] + 1}")
    info(f"--resume: {path}: step {resume['step']}, phase {resume['phase'] + 1}, {where}")
    return resume


def fit_phases(learn, phases: list[Phase], position: Position, log: MetricsLog, ckpt: "Checkpointer | None",
               patience: "EarlyStopping", resume: dict | None = None) -> None:
    """`fit_one_cycle` for each phase; on resume, skip what the checkpoint had finished."""
    for i, ph in enumerate(phases):
        if patience.stopped:
            break
        ph.setup(learn)
        log.phase = position.label = ph.label
        position.phase, position.epochs_before = i, sum(p.epochs for p in phases[:i])
        if not ph.epochs or (resume is not None and i < resume["phase"]):
            continue
        if resume is not None and i == resume["phase"]:
            if resume["epoch"] >= ph.epochs:  # this phase was complete at the checkpoint
                ckpt.skip_phase(resume)
                continue
            learn.fit_one_cycle(ph.epochs, ph.lr, start_epoch=resume["epoch"])
            continue
        learn.fit_one_cycle(ph.epochs, ph.lr)


class BestTracker(TrainingEpochs):
    """The best figure of `monitor` over a stage's epochs (every phase), its epoch, and the epochs since
    (fastai's TrackerCallback, kept across phases and in checkpoints)."""
    order = 53  # after the Recorder (50) has the epoch's figures; before the Checkpointer (55) saves them

    def __init__(self, monitor: Monitor, position: Position):
        self.monitor, self.position = monitor, position
        self.best, self.best_epoch, self.since_best, self.value, self.new_best = None, None, 0, None, False
        self.last_epoch = 0  # the stage's last trained epoch (1-based)

    def after_epoch(self):
        if not self.trained:
            return  # a `validate()` call, or an epoch skipped on resume
        self.last_epoch = self.position.epochs_before + self.epoch + 1
        value = epoch_figures(self.recorder).get(self.monitor.column)
        self.value = None if value is None else float(value)
        self.new_best = self.value is not None and self._better(self.value)
        if self.new_best:
            self.best, self.best_epoch = self.value, self.last_epoch
        self.since_best = 0 if self.new_best else self.since_best + 1
        # rank 0's score (it alone writes checkpoints) for every rank: a rank that thinks there is no best
        # epoch, or no reason to stop, would wait forever for the others
        self.best, self.best_epoch, self.since_best, self.new_best = distributed.from_main(
            lambda: (self.best, self.best_epoch, self.since_best, self.new_best))

    def _better(self, value: float) -> bool:
        if value != value:  # NaN (a correlation of constant predictions) is never the best
            return False
        return self.best is None or (value < self.best if self.monitor.lower_is_better else value > self.best)

    def state_dict(self) -> dict:
        return {"monitor": self.monitor.name, "best": self.best, "best_epoch": self.best_epoch,
                "since_best": self.since_best}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state.get("best", state.get("best_valid_loss")), state.get("best_epoch")
        self.since_best = state.get("since_best", 0)


class EarlyStopping(TrainingEpochs):
    """`train.patience` epochs without a better figure (the `best` tracker's count) end the stage: the fit is
    cancelled at the end of the epoch, once its checkpoint is written, and `fit_phases` runs no further
    phase (fastai's EarlyStoppingCallback, counted across the phases)."""
    order = 56  # after BestTracker (53) has counted the epoch and the Checkpointer (55) has saved it

    def __init__(self, patience: int | None, best: BestTracker):
        self.patience, self.best, self.stopped = patience, best, False

    def after_epoch(self):
        if self.trained and self.patience and self.best.since_best >= self.patience:
            self.stopped = True
            info(f"train.patience: no better {self.best.monitor.name} for {self.best.since_best} epochs; the "
                 f"stage ends after epoch {self.best.last_epoch} (best: epoch {self.best.best_epoch})")
            raise CancelFitException()  # as fastai's EarlyStoppingCallback ends a fit


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
    (which MetricsLog logs at the epoch's end, from its own `first` step of the epoch)."""

    def __init__(self, learn, log: MetricsLog):
        self.learn, self.log = learn, log

    def state_dict(self) -> dict:
        rec, first = self.learn.recorder, self.log.first
        smooth = rec.smooth_loss
        losses = rec.losses[first:]
        return {"smooth_loss": (torch.as_tensor(smooth.val).detach().cpu(), smooth.count),
                "lrs": list(rec.lrs[first:]),
                "losses": stacked(losses) if losses else None}

    def load_state_dict(self, state: dict) -> None:
        rec, device = self.learn.recorder, self.learn.dls.device
        rec.smooth_loss.val, rec.smooth_loss.count = (state["smooth_loss"][0].to(device),
                                                      state["smooth_loss"][1])
        rec.lrs = list(state["lrs"])  # a resumed fit starts at this epoch: its steps so far
        rec.losses = [] if state["losses"] is None else list(state["losses"].to(device))


class Checkpointer(TrainingEpochs):
    """Writes checkpoints (the state_dict protocol) and restores a resumed run from one."""
    # after TrainEvalCallback counted the step, the Recorder (50), MetricsLog (51) and BestTracker (53)
    order = 55

    def __init__(self, folder: Path, fingerprint: dict, train_cfg, metrics_file: Path, position: Position,
                 log: MetricsLog, best: BestTracker, before_save: Callable[[], None],
                 resume: dict | None = None):
        self.folder, self.fingerprint, self.metrics_file = folder, fingerprint, metrics_file
        self.every, self.minutes = train_cfg.checkpoint_every, train_cfg.checkpoint_minutes
        self.position, self.log, self.best, self.before_save = position, log, best, before_save
        self.resume = resume                    # restored at the start of its phase's fit
        self.saves = 0                          # checkpoints written by this process
        self.write_file = write_checkpoint      # (state, path): a test may slow it down to kill a write
        self._restoring = None

    def stateful(self) -> dict:
        """What is saved and restored through `state_dict`/`load_state_dict` (None: absent in this run)."""
        return {"model": unwrap(self.learn.model), "opt": self.learn.opt,
                "grad_scaler": getattr(self.learn, "scaler", None),
                "recorder": _RecorderState(self.learn, self.log)}

    def skip_phase(self, r: dict) -> None:
        """The checkpoint's phase was complete: its weights, and the random and loader state of the next
        phase's first epoch, as if never stopped."""
        unwrap(self.learn.model).load_state_dict(r["model"])
        self.restore_epoch_start(r)
        self.position.step, self.resume = r["step"], None

    # -- fit and epoch bookkeeping
    def before_fit(self):
        self.saved_at = time.monotonic()
        if self.resume is not None and self.resume["phase"] == self.position.phase:
            self._restoring, self.resume = self.resume, None
            for name, obj in self.stateful().items():
                if name != "recorder" and obj is not None and self._restoring.get(name) is not None:
                    obj.load_state_dict(self._restoring[name])
            self.position.step = self._restoring["step"]

    def before_train(self):
        super().before_train()
        self.batches_done = 0
        r = self._restoring
        if r is not None and self.epoch == r["epoch"]:
            self._restoring = None
            self.restore_epoch_start(r)
            if r["batches_done"]:
                self.batches_done = r["batches_done"]
                self.learn.dl = _SkipFirst(self.dl, r["batches_done"], lambda: self._restore_step(r))
            else:
                GlobalRNG.load_state_dict(r["step_rng"])
                _RecorderState(self.learn, self.log).load_state_dict(r["recorder"])
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
        _RecorderState(self.learn, self.log).load_state_dict(r["recorder"])
        encoder = unwrap(self.learn.model)[0]
        if r.get("hidden") is not None and hasattr(encoder, "hidden"):
            # all rows were saved; this rank's share
            rows = distributed.local_rows(r["hidden"][0][0].shape[1])
            encoder.hidden = [tuple(t[:, rows].to(self.dls.device) for t in hc) for hc in r["hidden"]]
            encoder.bs = rows.stop - rows.start

    # -- per step
    def before_batch(self):
        if self.training:
            self.position.step += 1

    def after_batch(self):
        if not self.training:
            return
        self.batches_done += 1
        if self.batches_done >= len(self.dl):
            return  # the epoch-end checkpoint follows validation
        step = self.position.step
        due = (self.every and step % self.every == 0) or (
            self.minutes and time.monotonic() - self.saved_at >= self.minutes * 60)
        if due:
            self._save(epoch_end=False)

    def after_epoch(self):
        if self.trained:  # not a `validate()` call, or an epoch skipped on resume
            self._save(epoch_end=True)

    # -- the file
    def _save(self, epoch_end: bool) -> None:
        self.before_save()
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
        best = self.best
        state.update({
            "format": FORMAT, "fingerprint": self.fingerprint, "phase": self.position.phase,
            "step": self.position.step, "epoch": self.epoch + 1 if epoch_end else self.epoch,
            "batches_done": 0 if epoch_end else self.batches_done,
            "train_iter": self.learn.train_iter, "pct_train": float(self.learn.pct_train),
            "hidden": hidden,
            # at an epoch end, the next epoch starts from the random state of this step
            "epoch_start": ({"rng": step_rng, "loader": self.dls.train.state_dict()} if epoch_end
                            else self.epoch_start),
            "step_rng": step_rng,
            "metrics_lines": count_lines(self.metrics_file),
            "monitored": best.value if epoch_end else None,
        })
        state.update(best.state_dict())  # the best figure, its epoch and the epochs since, at the top level
        last = self.folder / LAST_CHECKPOINT
        self.write_file(state, last)
        if epoch_end and best.new_best:
            link_checkpoint(last, self.folder / BEST_CHECKPOINT)
        self.saved_at = time.monotonic()
        self.saves += 1
