"""Mixed precision for AWD-LSTM training: fp16 with loss scaling, without a host-device sync per step.

Why fp16 and not bf16 (`run.precision: auto` picks fp16 on every CUDA GPU): under any CUDA autocast,
PyTorch runs cuDNN's LSTM in float16. Its autocast wrapper for `_cudnn_rnn` casts weights, input and
hidden state to half whatever dtype autocast was given (aten/src/ATen/cudnn/AutocastRNN.cpp), so the
LSTM's gradients are float16 either way. Under bf16 autocast nothing scales the loss: for the default
model at bs 256 x 72, at initialisation, 70 % of the LSTM weight gradients round to zero in float16
and the rest are subnormal (`python bench/lstm_grad_range.py`). With fp16 and GradScaler's initial
scale none are lost.

Why not fastai's `MixedPrecision` as it is: its step asks the GradScaler whether the gradients
overflowed (`found_inf.item()`) and reads the scale (`get_scale()`) every batch: two waits on the GPU
per step. PyTorch's fused AdamW takes the overflow flag as a tensor and skips an overflowed step on
the device (GradScaler's contract for optimizers that set `_step_supports_amp_scaling`). So here the
scaler unscales the gradients (on the device) and hands the flag to `FastaiAdamW`: nothing waits.
With fastai's own optimizer, or an AdamW that is not fused, fastai's step is used unchanged.
"""
from __future__ import annotations

import torch
from fastai.callback.fp16 import AMPMode, MixedPrecision


class _ScalingHandoff:
    """What the GradScaler steps: the Learner optimizer's parameter groups, and a `step` that only
    passes the scale and the overflow flag on; the Learner's own `opt.step()`, next, uses them."""
    _step_supports_amp_scaling = True

    def __init__(self, opt):
        self.opt = opt

    @property
    def param_groups(self):
        return self.opt.opt.param_groups

    def step(self):  # grad_scale and found_inf are set by GradScaler.step
        # found_inf sums the devices' flags; the fused kernel skips only on exactly 1
        self.opt.amp_scaling = (self.grad_scale, self.found_inf.clamp(max=1))


class LossScaledMixedPrecision(MixedPrecision):
    """fastai's fp16 `MixedPrecision` (autocast, loss scaling, checkpointed `learn.scaler`) whose
    optimizer step skips overflowed batches on the device instead of asking the host."""

    def __init__(self, device_type: str = "cuda", **grad_scaler_kwargs):
        super().__init__(amp_mode=AMPMode.FP16, **grad_scaler_kwargs)
        self.device_type = device_type

    def before_fit(self):
        if self.device_type == "cuda":
            super().before_fit()
        else:  # the tests: loss scaling on the CPU, which has no fp16 LSTM to autocast to
            self.autocast = torch.autocast(self.device_type, enabled=False)
            self.learn.scaler, self.scales = torch.amp.GradScaler(self.device_type, **self.kwargs), []
        self._handoff = None

    def before_step(self):
        if not getattr(self.opt, "scales_on_device", False):
            return super().before_step()
        if self._handoff is None or self._handoff.opt is not self.opt:
            self._handoff = _ScalingHandoff(self.opt)
        # Unscaled here, as fastai does, so that later before_step callbacks (GradientClip) see true
        # gradients; the inf/NaN check runs on the device and the fused step skips on its flag: no .item().
        self.scaler.unscale_(self._handoff)
        self.scaler.step(self._handoff)
