"""The options the LM benchmarks share (device, AWD-LSTM size, batch) and the model they describe."""
from __future__ import annotations

import argparse

import torch


def add_model_args(ap: argparse.ArgumentParser, emb: int = 64, hid: int = 192, layers: int = 2,
                   bs: int = 32) -> None:
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--emb", type=int, default=emb)
    ap.add_argument("--hid", type=int, default=hid)
    ap.add_argument("--layers", type=int, default=layers)
    ap.add_argument("--bs", type=int, default=bs)
    ap.add_argument("--bptt", type=int, default=72)


def arch(args) -> dict:
    return {"emb_sz": args.emb, "n_hid": args.hid, "n_layers": args.layers}


def language_model(args, vocab_size: int):
    """fastai's AWD-LSTM language model of the size the options give (on the CPU)."""
    from fastai.text.models.awdlstm import AWD_LSTM
    from fastai.text.models.core import get_language_model

    from ulmfit_cli.train.learners import awd_config
    return get_language_model(AWD_LSTM, vocab_size, config=awd_config(arch(args)))
