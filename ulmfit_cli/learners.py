"""The only place that builds fastai learners and moves weights between stages.

LM: `language_model_learner(..., pretrained=False)`; classifier: `text_classifier_learner`
with the encoder of an upstream run. Vocabulary transfer uses fastai's `match_embeds`
(known words keep their rows, new words get the mean embedding). Every weight file is a
plain state dict read with `weights_only=True`.
"""
from __future__ import annotations

import math
import time

import fastai.callback.all  # noqa: F401  (patches fit_one_cycle, freeze_to, to_fp16 onto Learner)
import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import ParamScheduler
from fastai.learner import Recorder
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import F1Score, accuracy
from fastai.text.learner import language_model_learner, match_embeds, text_classifier_learner
from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_clas_config, awd_lstm_lm_config
from fastai.text.models.core import get_language_model, get_text_classifier

from ulmfit_cli import distributed
from ulmfit_cli.config import RunSection
from ulmfit_cli.console import info, show_bars
from ulmfit_cli.device_metrics import DeviceAvgMetric, DevicePerplexity, keep_on_device
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.precision import LossScaledMixedPrecision
from ulmfit_cli.runs import ARCH_KEYS, Run, UpstreamRun
from ulmfit_cli.weight_dropout import flatten_weight_dropout


# ---------------------------------------------------------------- device and precision
def pick_device(run: RunSection) -> torch.device:
    """The device for `run.device`, after checking that `run.precision` works there.

    `run.precision: auto` is resolved here (and so recorded in results.json): fp16 with loss
    scaling on a GPU (bf16 would leave the LSTM's fp16 gradients unscaled: ulmfit_cli/precision.py),
    fp32 on the CPU.
    """
    cuda = torch.cuda.is_available()
    if run.device == "cuda" and not cuda:
        raise UlmfitError("run.device: cuda was asked for, but PyTorch sees no CUDA GPU here")
    device = torch.device("cuda" if run.device == "cuda" or (run.device == "auto" and cuda) else "cpu")
    if device.type == "cuda" and distributed.world().active:
        device = torch.device("cuda", distributed.world().local_rank)
    if run.precision == "auto":
        run.precision = "fp16" if device.type == "cuda" else "fp32"
    if device.type == "cpu" and run.precision != "fp32":
        # fastai's MixedPrecision autocasts on CUDA only; on CPU it would silently train in fp32.
        raise UlmfitError(f"run.precision: {run.precision} needs a CUDA GPU (this run is on the CPU); "
                          f"use run.precision=fp32")
    if run.precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise UlmfitError("run.precision: bf16 is not supported by this GPU; use fp16")
    return device


def _set_precision(learn, precision: str):
    if precision == "fp16":
        learn.add_cb(LossScaledMixedPrecision())
    elif precision == "bf16":
        info("run.precision: bf16 autocasts embeddings and decoder to bf16, but PyTorch still runs the LSTM "
             "layers in fp16, and without loss scaling; fp16 (the default) scales the loss")
        learn.to_bf16()
    return learn


# ---------------------------------------------------------------- architecture
def awd_config(arch: dict, classifier: bool = False) -> dict:
    cfg = dict(awd_lstm_clas_config if classifier else awd_lstm_lm_config)
    cfg.update({k: arch[k] for k in ARCH_KEYS})
    return cfg


# ---------------------------------------------------------------- learners
def _opt_func(train):
    if train.optimizer == "torch":
        from ulmfit_cli.optim import torch_adamw
        return torch_adamw
    from fastai.optimizer import Adam
    return Adam


def _finish(learn):
    """What every learner gets: DDP in a multi-process run; off a terminal (or off rank 0), MetricsLog's
    one line per epoch instead of fastai's bars and table; statistics kept on the device; the LSTM
    weights in one cuDNN buffer in fp32 on a GPU; the model on the device before fit builds the optimizer
    (fastai moves it only in `before_fit`, after `create_opt`; AdamW is fused only for GPU parameters)."""
    flatten_weight_dropout(learn.model).to(learn.dls.device)
    if distributed.world().active:
        learn.add_cb(distributed.ddp_callback())
    if not show_bars() or not distributed.world().main:
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *_: None
    return keep_on_device(learn)


def lm_learner(dls, arch: dict, drop_mult: float, train, precision: str, run: Run, stage: str):
    learn = language_model_learner(dls, AWD_LSTM, config=awd_config(arch), drop_mult=drop_mult,
                                   pretrained=False, metrics=[DeviceAvgMetric(accuracy), DevicePerplexity()],
                                   wd=train.wd, moms=train.moms, opt_func=_opt_func(train),
                                   cbs=[MetricsLog(run, stage)]
                                   + ([ScaleLrBySeqLen(train.bptt)] if getattr(train, "random_bptt", False) else []))
    return _finish(_set_precision(learn, precision))


def clf_learner(dls, arch: dict, n_out: int, model_cfg, train, precision: str, run: Run, stage: str):
    learn = text_classifier_learner(dls, AWD_LSTM, seq_len=train.bptt, config=awd_config(arch, classifier=True),
                                    pretrained=False, drop_mult=model_cfg.drop_mult, n_out=n_out,
                                    lin_ftrs=model_cfg.lin_ftrs, max_len=model_cfg.max_len,
                                    loss_func=CrossEntropyLossFlat(),
                                    metrics=[DeviceAvgMetric(accuracy), F1Score(average="macro")], wd=train.wd, moms=train.moms,
                                    opt_func=_opt_func(train), cbs=[MetricsLog(run, stage)])
    return _finish(_set_precision(learn, precision))


def lm_model(vocab: list[str], arch: dict, weights: dict) -> torch.nn.Module:
    """A bare AWD-LSTM language model with an LM run's weights (for generation)."""
    model = get_language_model(AWD_LSTM, len(vocab), config=awd_config(arch))
    _load(model, weights, "lm.pth")
    return model


def clf_model(n_vocab: int, n_out: int, arch: dict, drop_mult: float, lin_ftrs: list[int], max_len: int,
              bptt: int, weights: dict, what: str) -> torch.nn.Module:
    """A bare AWD-LSTM classifier (what `clf_learner` trains) with a classifier's weights (for prediction)."""
    model = get_text_classifier(AWD_LSTM, n_vocab, n_out, seq_len=bptt, config=awd_config(arch, classifier=True),
                                drop_mult=drop_mult, lin_ftrs=lin_ftrs, max_len=max_len)
    _load(model, weights, what)
    return model


def _load(module: torch.nn.Module, weights: dict, what: str) -> None:
    try:
        module.load_state_dict(weights)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()][:4]
        raise UlmfitError(f"{what} does not fit the model:\n  " + "\n  ".join(lines)) from None


def transfer_lm(learn, upstream: UpstreamRun, vocab: list[str]) -> float:
    """Load an upstream LM into `learn`, remapping embeddings to the new vocab; return vocab overlap."""
    weights = match_embeds(upstream.weights("lm.pth"), upstream.vocab, vocab)
    _load(learn.model, weights, f"{upstream.path / 'lm.pth'}")
    known = set(upstream.vocab)
    return sum(w in known for w in vocab) / len(vocab)


def load_encoder(learn, upstream: UpstreamRun) -> None:
    _load(learn.model[0].module, upstream.weights("encoder.pth"), f"{upstream.path / 'encoder.pth'}")


def encoder_state(learn) -> dict:
    encoder = learn.model[0]
    return getattr(encoder, "module", encoder).state_dict()


def check_freeze_to(learn, freeze_to: int, where: str) -> None:
    n = len(learn.splitter(learn.model))
    if not -n <= freeze_to < n:
        raise UlmfitError(f"{where}: freeze_to={freeze_to} is out of range for {n} layer groups "
                          f"(use -{n}..{n - 1}; 0 trains everything)")


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


# ---------------------------------------------------------------- metrics log
class MetricsLog(Callback):
    """Appends one JSON line per epoch to metrics.jsonl (and prints it when bars are off).

    Tokens are counted from batch shapes only, so logging never waits on the GPU.
    """
    order = Recorder.order + 1  # after the Recorder has the epoch's values

    def __init__(self, run: Run, stage: str):
        self.out, self.stage = run, stage
        self.phase, self.epoch_total = "", 0

    def before_epoch(self):
        self.t0, self.tokens, self.trained = time.perf_counter(), 0, False

    def before_train(self):
        self.trained = True  # `learn.validate()` also fires after_epoch: log training epochs only
        self.lr_steps, self.lr_stride = [], max(1, len(self.dl) // 200)  # at most ~200 rates per epoch
        self.ranks = distributed.world().size  # each rank trains its share of every batch

    def after_batch(self):
        if self.training:
            self.tokens += self.xb[0].numel() * self.ranks
            if self.iter % self.lr_stride == 0:
                self.lr_steps.append(float(self.opt.hypers[-1]["lr"]))

    def after_epoch(self):
        if not self.trained:
            return
        names = self.recorder.metric_names[1:-1]  # drop 'epoch' and 'time'
        values = self.recorder.values[-1]
        seconds = time.perf_counter() - self.t0
        self.epoch_total += 1
        rec = {"stage": self.stage, "phase": self.phase, "epoch": self.epoch_total}
        for name, v in zip(names, values):
            rec[name] = None if v is None or not math.isfinite(float(v)) else round(float(v), 6)
        rec["lr"] = float(self.opt.hypers[-1]["lr"])
        rec["seconds"] = round(seconds, 3)
        rec["tokens_per_s"] = round(self.tokens / seconds, 1) if seconds > 0 else None
        self.out.log_metrics({**rec, "lr_steps": self.lr_steps})
        if not show_bars():
            shown = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in rec.items() if k not in ("stage", "lr") and v is not None and v != "")
            info(f"[{self.stage}] {shown}")
