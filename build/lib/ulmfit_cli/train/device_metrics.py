"""Training statistics that stay on the device until the epoch ends.

fastai's `AvgLoss`, `AvgSmoothLoss` and `AvgMetric` copy every batch's loss or metric to the
host (`to_detach(..., cpu=True)`), and the progress bar formats the smoothed loss after every
batch: each of these waits for the GPU to finish the step, so the CPU can no longer queue the
next one. The classes here accumulate the same sums as device tensors; fastai's `Recorder`
reads them once per epoch (its `_maybe_item`). Values are the same as fastai's (tested).
"""
from __future__ import annotations

import time

import torch
from fastai.callback.progress import ProgressCallback
from fastai.learner import AvgLoss, AvgMetric, AvgSmoothLoss
from fastai.metrics import Perplexity
from fastai.torch_core import find_bs


def _detached(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().mean()


class DeviceAvgLoss(AvgLoss):
    def accumulate(self, learn):
        bs = find_bs(learn.yb)
        self.total = self.total + _detached(learn.loss) * bs
        self.count += bs


class DevicePerplexity(DeviceAvgLoss, Perplexity):
    pass


class DeviceAvgSmoothLoss(AvgSmoothLoss):
    def accumulate(self, learn):
        self.count += 1
        loss = _detached(learn.loss)
        self.val = torch.lerp(loss, self.val.to(loss.device, non_blocking=True), self.beta)


class DeviceAvgMetric(AvgMetric):
    def accumulate(self, learn):
        bs = find_bs(learn.yb)
        self.total = self.total + _detached(self.func(learn.pred, *learn.yb)) * bs
        self.count += bs


class CalmProgress(ProgressCallback):
    """fastai's progress bar, reading the smoothed loss (a device sync) at most once a second."""

    def before_epoch(self):
        self._shown = 0.0
        super().before_epoch()

    def after_batch(self):
        self.pbar.update(self.iter + 1)
        now = time.monotonic()
        if hasattr(self, "smooth_loss") and now - self._shown >= 1.0:
            self._shown = now
            self.pbar.comment = f"{self.smooth_loss.item():.4f}"


def keep_on_device(learn):
    """Give `learn`'s Recorder (and progress bar, if any) the device-side statistics."""
    rec = learn.recorder
    rec.loss, rec.smooth_loss = DeviceAvgLoss(), DeviceAvgSmoothLoss(beta=rec.smooth_loss.beta)
    if any(isinstance(cb, ProgressCallback) for cb in learn.cbs):
        learn.remove_cb(ProgressCallback)
        learn.add_cb(CalmProgress())
    return learn
