"""Classifier batches in plain NumPy (the ONNX runtime uses them without torch): how a batch of texts is
padded for fastai's model in training (`pad_chunks`, for its bptt loop: `loaders.clf_dl`) and for inference
(`pad_end`: `inference.net.InferenceNet` and its ONNX graph mask their pads), and inference's batches without
a DataLoader (`by_length`): texts sorted by length, longest first, each batch at most `max_rows` texts and
`max_rows x its longest text` at most `max_tokens` token slots.

Not fastai's `SortedDL` for inference: it forks worker processes per call (most of a single text's time)
and sizes batches by count alone, so one long text makes a batch of 64 as wide as itself.
"""
from __future__ import annotations

import numpy as np

# Measured on the demo's classifier on one CPU thread (bench/predict_speed.py): batches of 64-128 short texts
# run faster than 256 on PyTorch and onnxruntime alike (the LSTM's steps stay in cache), and hold less memory
MAX_ROWS = 128       # texts per batch
MAX_TOKENS = 8_192   # rows x longest: a batch of long documents has fewer rows


def by_length(lengths: np.ndarray, max_rows: int = MAX_ROWS,
              max_tokens: int = MAX_TOKENS) -> list[np.ndarray]:
    """Indices into the texts, one array per batch, longest texts first (each batch at least one text)."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    out, i = [], 0
    while i < len(order):
        rows = max(1, min(max_rows, max_tokens // max(int(lengths[order[i]]), 1)))
        out.append(order[i:i + rows])
        i += rows
    return out


def pad_chunks(docs: list[np.ndarray], pad: int, bptt: int) -> np.ndarray:
    """Docs sorted longest first -> (rows, the longest rounded up to whole `bptt` chunks): fastai's
    `pad_input_chunk` (pad_first): the padding in whole chunks before a text, the remainder after it.

    `SentenceEncoder` runs each chunk on the first rows that have a token at its first column, assuming the
    texts that have begun are a prefix of the rows. With fastai's width (the longest text), a short text that
    begins in the last chunk can follow a longer one that ended before that chunk's first column: the short
    one is then skipped, and its outputs are zeros. With whole chunks, every text runs to the last chunk."""
    width = -(-max(len(d) for d in docs) // bptt) * bptt
    out = np.full((len(docs), width), pad, dtype=np.int64)
    for row, d in zip(out, docs):
        lead = (width - len(d)) // bptt * bptt
        row[lead:lead + len(d)] = d
    return out


def pad_end(docs: list[np.ndarray], pad: int) -> np.ndarray:
    """Docs -> (rows, longest), each text first and its padding after it."""
    out = np.full((len(docs), max(len(d) for d in docs)), pad, dtype=np.int64)
    for row, d in zip(out, docs):
        row[:len(d)] = d
    return out
