"""PyTorch's AdamW as a fastai optimizer (`train.optimizer: torch`).

fastai's default `Adam` is a Python loop over parameters. The same update rule (Adam with
bias correction and decoupled weight decay, fastai's eps 1e-5) runs in PyTorch's AdamW as
one multi-tensor ("foreach") kernel per step, or its fused CUDA kernel when every parameter
is on a GPU. fastai's `OptimWrapper` maps its hyper-parameters (`lr`, `mom` -> `betas[0]`,
`sqr_mom` -> `betas[1]`, `wd`), so `slice()` rates, the one-cycle momentum schedule and
`freeze_to` work as with fastai's own optimizer (checked in tests/test_optim.py).

One difference is closed here: a Learner marks normalisation and bias parameters `do_wd=False`
(`wd_bn_bias=False`, its default) in the optimizer's state, which fastai's Adam honours and
PyTorch's AdamW cannot see. So the weight decay is applied here, to the parameters that want it,
exactly as AdamW would (p *= 1 - lr * wd, before the Adam update), and AdamW runs with wd 0.

With fp16 loss scaling (ulmfit_cli/train/precision.py) the fused kernel also unscales the gradients and
skips a step whose gradients overflowed, on the device; the weight decay is skipped with it.
"""
from __future__ import annotations

from functools import partial

import torch
from fastai.optimizer import OptimWrapper


class FastaiAdamW(OptimWrapper):
    @property
    def scales_on_device(self) -> bool:
        """Whether a GradScaler can hand this optimizer its scale and overflow flag (fused kernel only)."""
        return bool(self.opt.defaults.get("fused"))

    @torch.no_grad()
    def step(self, closure=None):
        grad_scale, found_inf = self.__dict__.pop("amp_scaling", (None, None))
        saved = []
        for pg in self.opt.param_groups:
            wd, lr = pg["weight_decay"], pg["lr"]
            decayed = [p for p in pg["params"] if p.grad is not None and self.state[p].get("do_wd", True)]
            if wd and decayed:  # an overflowed step (found_inf 1) decays nothing
                torch._foreach_mul_(decayed,
                                    1 - lr * wd if found_inf is None else 1 - lr * wd * (1 - found_inf))
            saved.append(wd)
            pg["weight_decay"] = 0.0
        if found_inf is not None:
            self.opt.grad_scale, self.opt.found_inf = grad_scale, found_inf
        try:
            return self.opt.step(closure)
        finally:
            for pg, wd in zip(self.opt.param_groups, saved):
                pg["weight_decay"] = wd
            if found_inf is not None:
                del self.opt.grad_scale, self.opt.found_inf


def torch_adamw(params, lr: float, mom: float = 0.9, sqr_mom: float = 0.99, eps: float = 1e-5,
                wd: float = 0.01, fused: bool | None = None) -> OptimWrapper:
    """Drop-in for fastai's `Adam` as a Learner's `opt_func`; fused on GPUs, foreach on the CPU."""
    groups = [list(g) for g in params] if params and isinstance(params[0], (list, tuple)) else [list(params)]
    if fused is None:
        fused = all(p.is_cuda for g in groups for p in g)
    kernel = {"fused": True} if fused else {"foreach": True}
    return FastaiAdamW(groups, opt=partial(torch.optim.AdamW, **kernel), lr=lr, betas=(mom, sqr_mom),
                       eps=eps, weight_decay=wd)
