"""What the LM stages share: finetune-lm's document split and loaders from texts, and (with pretrain) the
LM's outputs."""
from __future__ import annotations

import math

import numpy as np

from ulmfit_cli.console import info
from ulmfit_cli.corpus.text import numericalize, tokenize
from ulmfit_cli.corpus.tokenize import build_vocab
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.layout import ENCODER, LM_WEIGHTS, RESULTS
from ulmfit_cli.runs import Run
from ulmfit_cli.train import distributed
from ulmfit_cli.train.fingerprint import data_signature
from ulmfit_cli.train.learners import encoder_state
from ulmfit_cli.train.loaders import as_split, lm_loaders


def split_docs(docs: list[str], valid_pct: float, seed: int, source: str) -> tuple[list[str], list[str]]:
    """Hold out a `valid_pct` share of whole documents (articles), reproducibly from `seed`."""
    if len(docs) < 2:
        raise UlmfitError(f"{source} has {len(docs)} non-empty document(s): need at least 2 to hold some "
                          f"out for validation")
    order = np.random.default_rng(seed).permutation(len(docs))
    n_valid = min(len(docs) - 1, max(1, round(len(docs) * valid_pct)))
    valid = set(order[:n_valid].tolist())
    return [d for i, d in enumerate(docs) if i not in valid], [d for i, d in enumerate(docs) if i in valid]


def lm_data(train: list[str], valid: list[str], cfg, device, source: str, sp_model=None):
    """Tokenize both splits, build the vocab on the training split, and wrap them in the LM loaders."""
    toks = distributed.from_main(  # tokenized once, on rank 0, in a multi-process run
        lambda: tokenize(train + valid, workers=cfg.data.workers, sp_model=sp_model, lang=cfg.data.lang))
    trn, val = toks[:len(train)], toks[len(train):]
    vocab = build_vocab(trn, cfg.data.max_vocab, cfg.data.min_freq)
    n_trn, n_val = sum(map(len, trn)), sum(map(len, val))
    info(f"{source}: {len(train)} train / {len(valid)} valid documents, {n_trn:,} / {n_val:,} tokens, "
         f"vocab {len(vocab):,}")
    trn_split, val_split = as_split(numericalize(trn, vocab)), as_split(numericalize(val, vocab))
    sig = data_signature(vocab, trn_split[0], val_split[0])  # the direction is in the config fingerprint
    dls = lm_loaders(trn_split, val_split, vocab, cfg.train, device, cfg.run.seed, cfg.data.backwards)
    return dls, vocab, sig, {"train_docs": len(train), "valid_docs": len(valid), "train_tokens": n_trn,
                             "valid_tokens": n_val, "vocab_size": len(vocab)}


def save_lm(run: Run, learn, stats: dict) -> dict:
    """Validate, write lm.pth, encoder.pth and results.json; return the results."""
    with learn.no_bar():
        loss, acc, ppl = (float(v) for v in learn.validate())
    if not math.isfinite(loss):
        raise UlmfitError(f"training diverged: the validation loss is {loss}; lower train.lr")
    run.save_weights(LM_WEIGHTS, learn.model.state_dict())
    run.save_weights(ENCODER, encoder_state(learn))
    results = {"valid_loss": loss, "valid_accuracy": acc, "valid_perplexity": ppl, **stats}
    run.write_json(RESULTS, results)
    return results
