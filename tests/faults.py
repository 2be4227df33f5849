"""Run a training command with faults injected through fastai callbacks, for the tests that kill runs.

    python tests/faults.py [--pause-after-checkpoint S [--pause-in-phase N] [--pause-from-epoch E]] [--slow-checkpoint S]
                           [--hold-while FILE]
                           [--nan-at-step N] STAGE [-c CONFIG ...] [--set KEY=VALUE ...] [--run-dir DIR]
                           [--resume] [--force]

The stage runs through `ulmfit_cli.api.train(..., callbacks=...)` with the CLI's error handling
(exit 2 for bad input, 3 for a NaN loss), so a test sees what `ulmfit STAGE ...` would do, plus the
fault. Also a script for torchrun (`torchrun ... tests/faults.py ...`).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fastai.callback.core import Callback

ROOT = Path(__file__).resolve().parents[1]


class PauseAfterCheckpoint(Callback):
    """Sleep after each checkpoint written in phase >= `phase` and (fastai) epoch >= `epoch` of that phase,
    so that a test can kill the run there."""
    order = 60  # after the Checkpointer (55) wrote it

    def __init__(self, seconds: float, phase: int = 0, epoch: int = 0):
        self.seconds, self.phase, self.from_epoch, self.seen = seconds, phase, epoch, 0

    def _maybe_pause(self):
        ckpt = self.learn.checkpointer
        if ckpt.saves > self.seen:
            self.seen = ckpt.saves
            if ckpt.position.phase >= self.phase and self.epoch >= self.from_epoch:
                time.sleep(self.seconds)

    def after_batch(self):
        self._maybe_pause()

    def after_epoch(self):
        self._maybe_pause()


class HoldWhile(Callback):
    """After each checkpoint, wait while `flag` exists (a test removes it when it has done its part)."""
    order = 60

    def __init__(self, flag: Path):
        self.flag, self.seen = flag, 0

    def after_batch(self):
        if self.learn.checkpointer.saves > self.seen:
            self.seen = self.learn.checkpointer.saves
            end = time.monotonic() + 300
            while self.flag.exists() and time.monotonic() < end:
                time.sleep(0.05)

    after_epoch = after_batch


class _SlowFile:
    """A file object that pauses once, half-way through what is written to it."""

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


class SlowCheckpoint(Callback):
    """Checkpoints are written through the same atomic writer, pausing half-way (a kill lands mid-write)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def before_fit(self):
        import torch

        from ulmfit_cli.files import atomic_write
        from ulmfit_cli.train.checkpoint_files import plain

        def slow_write(state, path):
            state = plain(state)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: torch.save(state, _SlowFile(f, self.seconds)))
        self.learn.checkpointer.write_file = slow_write


class NanAtStep(Callback):
    """The training loss of step `step` (counted over the whole stage) becomes NaN."""
    order = 0

    def __init__(self, step: int):
        self.step = step

    def after_loss(self):
        if self.training and self.learn.checkpointer.position.step == self.step:
            self.learn.loss_grad = self.loss_grad * float("nan")
            self.learn.loss = self.loss * float("nan")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--pause-after-checkpoint", type=float)
    p.add_argument("--pause-in-phase", type=int, default=0)
    p.add_argument("--pause-from-epoch", type=int, default=0)
    p.add_argument("--slow-checkpoint", type=float)
    p.add_argument("--nan-at-step", type=int)
    p.add_argument("--hold-while", type=Path)
    p.add_argument("stage")
    p.add_argument("-c", "--config", action="append", default=[])
    p.add_argument("-s", "--set", action="append", default=[])
    p.add_argument("--run-dir")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    cbs = []
    if a.pause_after_checkpoint:
        cbs.append(PauseAfterCheckpoint(a.pause_after_checkpoint, a.pause_in_phase, a.pause_from_epoch))
    if a.slow_checkpoint:
        cbs.append(SlowCheckpoint(a.slow_checkpoint))
    if a.hold_while:
        cbs.append(HoldWhile(a.hold_while))
    if a.nan_at_step:
        cbs.append(NanAtStep(a.nan_at_step))

    import typer
    from conftest import tiny_classifier_defaults

    from ulmfit_cli import api
    from ulmfit_cli.cli import _user_errors, handle_sigterm
    tiny_classifier_defaults()  # as the in-process runs the tests compare with
    handle_sigterm()
    try:
        with _user_errors():
            api.train(a.stage, a.config, a.set, a.run_dir, a.force, a.resume, callbacks=cbs)
    except typer.Exit as e:
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
