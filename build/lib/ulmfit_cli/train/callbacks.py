"""The fastai callbacks every training stage shares: the metrics log, progress lines off a terminal,
AWD-LSTM's rate scaling for random window lengths, the NaN watch, and the `run.loggers`. Checkpoints and
resuming are in `checkpoints.py`."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from fastai.callback.core import Callback
from fastai.callback.schedule import ParamScheduler
from fastai.learner import Recorder

from ulmfit_cli.console import info, show_bars
from ulmfit_cli.errors import TrainingFailed, UlmfitError
from ulmfit_cli.layout import LAST_CHECKPOINT, TENSORBOARD
from ulmfit_cli.train import distributed

NAN_CHECK_EVERY = 100  # steps between reads of the on-device NaN flag (each read waits for the GPU)
STEPS_LOGGED = 200     # at most about this many per-step rates and losses per epoch in metrics.jsonl


def stacked(losses: list) -> torch.Tensor:
    """The Recorder's per-step losses (device tensors) as one CPU tensor: a single copy, one GPU wait."""
    return torch.stack([torch.as_tensor(v) for v in losses]).float().cpu()


def epoch_figures(recorder) -> dict:
    """The Recorder's figures of the epoch that just ended: {train_loss, valid_loss, <metric names>}."""
    return dict(zip(recorder.metric_names[1:-1], recorder.values[-1]))  # without 'epoch' and 'time'


@dataclass
class Position:
    """Where a stage is in its schedule, shared by what needs it (given to each, never looked up): the phase
    runner sets the phase, the Checkpointer counts (and restores) the steps, NanWatch names them."""
    phase: int = 0            # index into the stage's phases
    label: str = ""           # the phase's label (e.g. "freeze_to -1")
    step: int = 0             # training steps of the stage so far
    epochs_before: int = 0    # epochs of the stage's earlier phases


class TrainingEpochs(Callback):
    """Knows whether the epoch that ends trained (`trained`): `learn.validate()` also fires before_epoch and
    after_epoch, and so does an epoch skipped on resume."""

    def before_epoch(self):
        self.trained = False

    def before_train(self):
        self.trained = True


class MetricsLog(TrainingEpochs):
    """Appends one JSON line per epoch to metrics.jsonl (and prints it when bars are off).

    The epoch's figures are the Recorder's; its per-step rates and smoothed losses (`recorder.lrs`,
    `recorder.losses`, sampled) go into the line too, since the Recorder forgets them at each fit and
    the plots span every phase of the stage. Tokens are counted from batch shapes only, and the
    losses read once per epoch, so logging never waits on the GPU.
    """
    order = Recorder.order + 1  # after the Recorder has the epoch's values

    def __init__(self, run, stage: str):
        self.out, self.stage = run, stage
        self.phase, self.epoch_total = "", 0

    def before_epoch(self):
        super().before_epoch()
        self.t0, self.tokens = time.perf_counter(), 0

    def before_train(self):
        super().before_train()  # training epochs only are logged
        self.first = len(self.recorder.lrs)  # where this epoch's steps start in the Recorder
        self.ranks = distributed.world().size  # each rank trains its share of every batch

    def after_batch(self):
        if self.training:
            self.tokens += self.xb[0].numel() * self.ranks

    def after_epoch(self):
        if not self.trained:
            return
        seconds = time.perf_counter() - self.t0
        self.epoch_total += 1
        rec = {"stage": self.stage, "phase": self.phase, "epoch": self.epoch_total}
        for name, v in epoch_figures(self.recorder).items():
            rec[name] = None if v is None or not math.isfinite(float(v)) else round(float(v), 6)
        rec["lr"] = float(self.opt.hypers[-1]["lr"])
        rec["seconds"] = round(seconds, 3)
        rec["tokens_per_s"] = round(self.tokens / seconds, 1) if seconds > 0 else None
        lrs, losses = self.recorder.lrs[self.first:], self.recorder.losses[self.first:]
        stride = max(1, len(lrs) // STEPS_LOGGED)
        sampled = stacked(losses[::stride]) if losses else []
        self.out.log_metrics({**rec, "lr_steps": [float(v) for v in lrs[::stride]],
                              "loss_steps": [round(float(v), 6) for v in sampled]})
        if not show_bars():
            shown = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in rec.items()
                              if k not in ("stage", "lr") and v is not None and v != "")
            info(f"[{self.stage}] {shown}")


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class ProgressLines(Callback):
    """Off a terminal (logs, CI, nohup) fastai's bar is off, and a long epoch would print nothing for
    minutes: a line every ULMFIT_PROGRESS_SECONDS (default 30) with the step, the share of the epoch,
    the smoothed loss, tokens/s and the epoch's ETA, as Hugging Face's Trainer logs every
    `logging_steps`. The loss is read only when a line is printed (one GPU wait per line); tokens and the
    epoch's start are those of the MetricsLog it is given, which counts them anyway."""
    order = MetricsLog.order + 1

    def __init__(self, log: MetricsLog):
        self.log, self.stage, self.every = (log, log.stage,
                                            float(os.environ.get("ULMFIT_PROGRESS_SECONDS", 30)))

    def before_epoch(self):
        self.last = time.perf_counter()

    def after_batch(self):
        now = time.perf_counter()
        if not self.training or now - self.last < self.every:
            return
        log = self.log
        self.last, done, total, elapsed = now, self.iter + 1, self.n_iter, now - log.t0
        info(f"[{self.stage}] epoch {self.epoch + 1}/{self.n_epoch}  step {done:,}/{total:,} "
             f"({done / total:.0%})  loss {float(self.smooth_loss):.4f}  {log.tokens / elapsed:,.0f} "
             f"tokens/s  epoch ETA {_duration(elapsed / done * (total - done))}")


class ScaleLrBySeqLen(Callback):
    """With random-length windows, each step's rate is scaled by its length / bptt (AWD-LSTM's rule),
    so short windows do not count as much as full ones. Runs after fastai's ParamScheduler has set
    the step's rates, which it sets afresh every batch."""
    order = ParamScheduler.order + 1

    def __init__(self, bptt: int):
        self.bptt = bptt

    def before_batch(self):
        if self.training:
            factor = self.xb[0].shape[1] / self.bptt
            self.opt.set_hyper("lr", [h["lr"] * factor for h in self.opt.hypers])


class NanWatch(Callback):
    """Stops the stage (`TrainingFailed`, exit 3) at a NaN or infinite training loss, naming the step.

    Not fastai's TerminateOnNaNCallback: that reads the loss on the host every batch (a GPU wait) and
    ends the fit quietly. Here the check is a flag on the device, read every NAN_CHECK_EVERY steps and
    by the Checkpointer before it writes, so no checkpoint ever holds a NaN step. The stage's `position`
    names the step and phase; `folder` is where the last good checkpoint is.
    """
    order = 54  # before the Checkpointer (55) may save at the end of the same batch

    def __init__(self, position: Position, folder: Path):
        self.position, self.folder = position, folder

    def before_fit(self):
        self.bad_step = None

    def after_batch(self):
        if not self.training:
            return
        step = self.position.step  # the stage's step count (counted at before_batch, kept on resume)
        finite = torch.isfinite(self.loss.detach()).all()
        self.bad_step = (torch.where(finite, -1, step) if self.bad_step is None
                         else torch.where((self.bad_step < 0) & ~finite, step, self.bad_step))
        if step % NAN_CHECK_EVERY == 0:
            self.check()

    def check(self) -> None:
        if self.bad_step is not None and int(self.bad_step) >= 0:  # one read of a device flag
            kept = (self.folder / LAST_CHECKPOINT).is_file()  # never point at a checkpoint that is not there
            where = (f"the last good checkpoint is kept in {self.folder}. Lower train.lr (or use "
                     f"run.precision=fp32) and rerun with --resume" if kept
                     else "no checkpoint was written before it. Check the labels and train.lr (or use "
                          "run.precision=fp32) and start the run again")
            raise TrainingFailed(
                f"the training loss became NaN or infinite at step {int(self.bad_step)} (epoch "
                f"{self.epoch + 1}, {self.position.label or 'training'}); {where}.")


def logger_callbacks(run_cfg, run) -> list[Callback]:
    """`run.loggers` as fastai's own callbacks, on rank 0, writing into the run dir (`tensorboard/`)."""
    if "tensorboard" not in run_cfg.loggers or not distributed.is_main():
        return []
    try:
        from fastai.callback.tensorboard import TensorBoardCallback  # late: the tensorboard extra is optional
    except ImportError as e:
        raise UlmfitError(f"run.loggers: tensorboard needs the tensorboard package ({e}); "
                          f"pip install 'ulmfit-cli[tensorboard]'") from None

    class TensorBoard(TensorBoardCallback):
        """fastai's, logging the numeric hyper-parameters only: PyTorch's AdamW (`train.optimizer: torch`)
        keeps flags and None among them, which fastai's would hand to the writer."""

        def after_batch(self):
            self.writer.add_scalar("train_loss", self.smooth_loss, self.train_iter)
            for i, h in enumerate(self.opt.hypers):
                for k, v in h.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        self.writer.add_scalar(f"{k}_{i}", v, self.train_iter)

    # no model graph (fastai cannot trace it under mixed precision) and no sample predictions (they need
    # fastai's decoding transforms, which these loaders do not carry)
    return [TensorBoard(log_dir=str(run.path / TENSORBOARD), trace_model=False, log_preds=False)]
