"""What pretrain and finetune-lm share: the article split, tokens to DataLoaders, and the LM's outputs."""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from fastai.torch_core import set_seed

from ulmfit_cli import distributed
from ulmfit_cli.checkpoints import data_signature
from ulmfit_cli.console import info
from ulmfit_cli.corpus.tokenize import build_vocab, numericalize, tokenize
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.learners import encoder_state, pick_device
from ulmfit_cli.loaders import lm_dls, stream_lm_dls
from ulmfit_cli.runs import Run


def start(cfg):
    """Device (precision checked) and seeds, before any data is read or loader built.

    `run.deterministic` turns on PyTorch's deterministic algorithms; cuBLAS needs its workspace
    setting before the first CUDA call, so it is set here first.
    """
    if cfg.run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    device = pick_device(cfg.run)
    # fastai's `reproducible` also turns off cuDNN's autotuner: only when asked for (CPU runs are exact anyway)
    set_seed(cfg.run.seed, reproducible=cfg.run.deterministic)
    return device


def split_docs(docs: list[str], valid_pct: float, seed: int, source: str) -> tuple[list[str], list[str]]:
    """Hold out a `valid_pct` share of whole documents (articles), reproducibly from `seed`."""
    if len(docs) < 2:
        raise UlmfitError(f"{source} has {len(docs)} non-empty document(s): need at least 2 to hold some "
                          f"out for validation")
    order = np.random.default_rng(seed).permutation(len(docs))
    n_valid = min(len(docs) - 1, max(1, round(len(docs) * valid_pct)))
    valid = set(order[:n_valid].tolist())
    return [d for i, d in enumerate(docs) if i not in valid], [d for i, d in enumerate(docs) if i in valid]


def lm_data(train: list[str], valid: list[str], data, train_cfg, device, source: str, sp_model=None,
            data_seed: int = 0):
    """Tokenize both splits, build the vocab on the training split, and wrap them in fastai loaders."""
    toks = distributed.from_main(  # tokenized once, on rank 0, in a multi-process run
        lambda: tokenize(train + valid, workers=data.workers, sp_model=sp_model))
    trn, val = toks[:len(train)], toks[len(train):]
    vocab = build_vocab(trn, data.max_vocab, data.min_freq)
    n_trn, n_val = sum(map(len, trn)), sum(map(len, val))
    info(f"{source}: {len(train)} train / {len(valid)} valid documents, {n_trn:,} / {n_val:,} tokens, "
         f"vocab {len(vocab):,}")
    trn_ids, val_ids, bs, bptt = numericalize(trn, vocab), numericalize(val, vocab), train_cfg.bs, train_cfg.bptt
    trn_stream, val_stream = np.concatenate(trn_ids), np.concatenate(val_ids)
    sig = data_signature(vocab, trn_stream, val_stream)  # the direction is in the config fingerprint
    if train_cfg.loader == "stream":  # the loader reads the streams backwards for data.backwards
        dls = stream_lm_dls(trn_stream, val_stream, vocab, bs, bptt, device, data_seed, train_cfg.random_bptt,
                            np.cumsum([0] + [len(d) for d in trn_ids]), backwards=data.backwards)
    else:
        if data.backwards:  # each document reversed, and their order: the whole stream read backwards
            trn_ids, val_ids = [d[::-1].copy() for d in reversed(trn_ids)], [d[::-1].copy() for d in reversed(val_ids)]
        dls = lm_dls(trn_ids, val_ids, vocab, bs, bptt, device)
    return dls, vocab, sig, {"train_docs": len(train), "valid_docs": len(valid), "train_tokens": n_trn,
                        "valid_tokens": n_val, "vocab_size": len(vocab)}


def save_lm(run: Run, learn, stats: dict) -> dict:
    """Validate, write lm.pth, encoder.pth and results.json; return the results."""
    with learn.no_bar():
        loss, acc, ppl = (float(v) for v in learn.validate())
    if not math.isfinite(loss):
        raise UlmfitError(f"training diverged: the validation loss is {loss}; lower train.lr")
    run.save_weights("lm.pth", learn.model.state_dict())
    run.save_weights("encoder.pth", encoder_state(learn))
    results = {"valid_loss": loss, "valid_accuracy": acc, "valid_perplexity": ppl, **stats}
    run.write_json("results.json", results)
    return results
