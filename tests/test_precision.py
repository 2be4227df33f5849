"""fp16 loss scaling without host syncs: the same steps as fastai's MixedPrecision, overflowed steps skipped.

Run on the CPU: the same loss scaling, overflow check and optimizer step as on CUDA, with the model in fp32
(the CPU has no fp16 LSTM kernel to autocast to).
"""
import sys
from functools import partial

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.text.learner import language_model_learner
from fastai.text.models.awdlstm import AWD_LSTM
from fastai.torch_core import set_seed

from ulmfit_cli.train.learners import awd_config
from ulmfit_cli.train.loaders import stream_lm_dls
from ulmfit_cli.train.optim import torch_adamw
from ulmfit_cli.train.precision import LossScaledMixedPrecision

VOCAB = ["xxunk", "xxpad", "xxbos", "xxeos"] + [f"w{i}" for i in range(60)]


class OverflowAt(Callback):
    """Puts an inf into one gradient at the given steps (what an fp16 overflow looks like)."""
    order = 5

    def __init__(self, steps):
        self.steps, self.seen, self.before = set(steps), 0, None

    def after_backward(self):
        if self.seen in self.steps:
            next(p for p in self.model.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")
            self.before = [p.detach().clone() for p in self.model.parameters()]
        self.seen += 1


def _learner(fused: bool, cbs=(), **scaler):
    set_seed(0, reproducible=True)
    tokens = np.random.default_rng(0).integers(4, len(VOCAB), 1200)
    dls = stream_lm_dls(tokens, tokens[:200], VOCAB, 4, 10, torch.device("cpu"))
    learn = language_model_learner(dls, AWD_LSTM, config=awd_config({"emb_sz": 8, "n_hid": 16, "n_layers": 2}),
                                   pretrained=False, opt_func=partial(torch_adamw, fused=fused), wd=0.1,
                                   cbs=[LossScaledMixedPrecision("cpu", **scaler), *cbs])
    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ == "ProgressCallback"])
    learn.logger = lambda *_: None
    return learn


class GradSizes(Callback):
    """What a later before_step callback (fastai's GradientClip has order 11) sees of the gradients."""
    order = 11

    def __init__(self):
        self.sizes = []

    def before_step(self):
        self.sizes.append(sum(float(p.grad.abs().sum()) for p in self.model.parameters() if p.grad is not None))


def _scaler_item_calls(learn, monkeypatch) -> int:
    """`.item()` calls made by PyTorch's GradScaler during a fit: each one is a GPU wait on CUDA."""
    count = 0
    original = torch.Tensor.item

    def counting(self):
        nonlocal count
        count += sys._getframe(1).f_globals.get("__name__") == "torch.amp.grad_scaler"
        return original(self)
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "item", counting)
        learn.fit_one_cycle(1, 1e-2)
    return count


def test_device_side_loss_scaling_takes_fastais_steps_without_asking_the_host(monkeypatch):
    ref_grads, our_grads = GradSizes(), GradSizes()
    ref = _learner(fused=False, cbs=[ref_grads])  # not fused: fastai's own MixedPrecision step
    ref_reads = _scaler_item_calls(ref, monkeypatch)
    ours = _learner(fused=True, cbs=[our_grads])
    our_reads = _scaler_item_calls(ours, monkeypatch)
    assert np.allclose(ref_grads.sizes, our_grads.sizes, rtol=1e-3)  # unscaled for later callbacks too
    assert ref_reads >= len(ref.dls.train)  # fastai's step reads found_inf every batch
    assert our_reads == 0
    for (name, a), b in zip(ref.model.named_parameters(), ours.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name
    assert float(ours.recorder.losses[-1]) < float(ours.recorder.losses[0])


def test_an_overflowed_step_changes_nothing_and_halves_the_scale():
    overflow = OverflowAt([3])
    learn = _learner(fused=True, cbs=[overflow], init_scale=256.0)  # too small to overflow by itself
    scales = []

    class Watch(Callback):
        order = 90  # after MixedPrecision's scaler.update()

        def after_step(self):
            scales.append(self.learn.scaler.get_scale())
            if overflow.seen == 4 and len(scales) == 4:  # the overflowed step has just run
                after = [p.detach() for p in self.model.parameters()]
                assert all(torch.equal(a, b) for a, b in zip(overflow.before, after))
                steps = {int(s["step"]) for s in self.learn.opt.opt.state.values()}
                assert steps == {3}, steps  # three real steps before it, the fourth not counted
    learn.add_cb(Watch())
    learn.fit_one_cycle(1, 1e-2)
    assert len(scales) == len(learn.dls.train)
    assert scales[3] == scales[2] / 2
    assert all(np.isfinite(p.detach().numpy()).all() for p in learn.model.parameters())
    # later steps train again
    assert {int(s["step"]) for s in learn.opt.opt.state.values()} == {len(learn.dls.train) - 1}
