"""The only place that builds fastai learners and moves weights between stages.

LM: `language_model_learner(..., pretrained=False)`; classifier: `text_classifier_learner`
with the encoder of an upstream run. Vocabulary transfer uses fastai's `match_embeds`
(known words keep their rows, new words get the mean embedding). Every weight file is a
plain state dict read with `weights_only=True`.
"""
from __future__ import annotations

import fastai.callback.all  # noqa: F401  (patches fit_one_cycle, freeze_to, to_fp16 onto Learner)
import torch
from fastai.callback.progress import ProgressCallback
from fastai.metrics import accuracy
from fastai.optimizer import Adam
from fastai.text.learner import language_model_learner, match_embeds, text_classifier_learner
from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_clas_config, awd_lstm_lm_config
from fastai.text.models.core import get_language_model, get_text_classifier

from ulmfit_cli.config import ARCH_KEYS
from ulmfit_cli.console import info, show_bars
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.layout import ENCODER, LM_WEIGHTS
from ulmfit_cli.runs import Run, UpstreamRun
from ulmfit_cli.train import distributed
from ulmfit_cli.train.callbacks import MetricsLog, ProgressLines, ScaleLrBySeqLen
from ulmfit_cli.train.device_metrics import DeviceAvgMetric, DevicePerplexity, keep_on_device
from ulmfit_cli.train.optim import torch_adamw
from ulmfit_cli.train.precision import LossScaledMixedPrecision
from ulmfit_cli.train.weight_dropout import flatten_weight_dropout


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
    return torch_adamw if train.optimizer == "torch" else Adam


def _finish(learn, log: MetricsLog):
    """What every learner gets: DDP in a multi-process run; off a terminal (or off rank 0), MetricsLog's
    one line per epoch instead of fastai's bars and table; statistics kept on the device; the LSTM
    weights in one cuDNN buffer in fp32 on a GPU; the model on the device before fit builds the optimizer
    (fastai moves it only in `before_fit`, after `create_opt`; AdamW is fused only for GPU parameters)."""
    flatten_weight_dropout(learn.model).to(learn.dls.device)
    if distributed.world().active:
        learn.add_cb(distributed.ddp_callback())
    if not show_bars() or not distributed.is_main():
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *_: None
        if distributed.is_main():
            learn.add_cb(ProgressLines(log))
    return keep_on_device(learn)


def lm_learner(dls, arch: dict, drop_mult: float, train, precision: str, run: Run, stage: str, cbs=()):
    """fastai's AWD-LSTM language-model learner; `cbs`: more callbacks (the API's `callbacks`)."""
    log = MetricsLog(run, stage)
    learn = language_model_learner(dls, AWD_LSTM, config=awd_config(arch), drop_mult=drop_mult,
                                   pretrained=False, metrics=[DeviceAvgMetric(accuracy), DevicePerplexity()],
                                   wd=train.wd, moms=train.moms, opt_func=_opt_func(train),
                                   cbs=[log, *cbs]
                                   + ([ScaleLrBySeqLen(train.bptt)] if getattr(train, "random_bptt", False)
                                      else []))
    return _finish(_set_precision(learn, precision), log)


def clf_learner(dls, arch: dict, n_out: int, model_cfg, train, precision: str, run: Run, stage: str, cbs=(),
                class_weights: list[float] | None = None, loss_and_metrics=None):
    """fastai's AWD-LSTM classifier learner (concat pooling, head `model_cfg.lin_ftrs`), with the task's
    `loss_and_metrics(weights)` (`classify.task.Task`'s, given `train.class_weights` as a tensor) and
    `model_cfg.y_range` (fastai's sigmoid range) for regression."""
    weight = (None if class_weights is None
              else torch.tensor(class_weights, dtype=torch.float32, device=dls.device))
    loss, metrics = loss_and_metrics(weight)
    log = MetricsLog(run, stage)
    learn = text_classifier_learner(dls, AWD_LSTM, seq_len=train.bptt,
                                    config=awd_config(arch, classifier=True),
                                    pretrained=False, drop_mult=model_cfg.drop_mult, n_out=n_out,
                                    lin_ftrs=model_cfg.lin_ftrs, max_len=model_cfg.max_len,
                                    y_range=getattr(model_cfg, "y_range", None), loss_func=loss,
                                    metrics=metrics, wd=train.wd, moms=train.moms,
                                    opt_func=_opt_func(train), cbs=[log, *cbs])
    return _finish(_set_precision(learn, precision), log)


def lm_model(vocab: list[str], arch: dict, weights: dict) -> torch.nn.Module:
    """A bare AWD-LSTM language model with an LM run's weights (for generation)."""
    model = get_language_model(AWD_LSTM, len(vocab), config=awd_config(arch))
    _load(model, weights, LM_WEIGHTS)
    return model


def clf_model(n_vocab: int, n_out: int, arch: dict, drop_mult: float, lin_ftrs: list[int], max_len: int,
              bptt: int, weights: dict, what: str, y_range=None) -> torch.nn.Module:
    """A bare AWD-LSTM classifier (what `clf_learner` trains) with a classifier's weights (for prediction)."""
    model = get_text_classifier(AWD_LSTM, n_vocab, n_out, seq_len=bptt,
                                config=awd_config(arch, classifier=True), drop_mult=drop_mult,
                                lin_ftrs=lin_ftrs, max_len=max_len, y_range=y_range)
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
    weights = match_embeds(upstream.weights(LM_WEIGHTS), upstream.vocab, vocab)
    _load(learn.model, weights, f"{upstream.path / LM_WEIGHTS}")
    known = set(upstream.vocab)
    return sum(w in known for w in vocab) / len(vocab)


def load_encoder(learn, upstream: UpstreamRun) -> None:
    _load(learn.model[0].module, upstream.weights(ENCODER), f"{upstream.path / ENCODER}")


def encoder_state(learn) -> dict:
    encoder = learn.model[0]
    return getattr(encoder, "module", encoder).state_dict()


def check_freeze_to(learn, freeze_to: int, where: str) -> None:
    n = len(learn.splitter(learn.model))
    if not -n <= freeze_to < n:
        raise UlmfitError(f"{where}: freeze_to={freeze_to} is out of range for {n} layer groups "
                          f"(use -{n}..{n - 1}; 0 trains everything)")
