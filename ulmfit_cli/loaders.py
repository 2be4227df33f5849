"""fastai DataLoaders over already-numericalized documents.

Language model: fastai's `LMDataLoader` (documents shuffled each epoch, concatenated, cut
into `bs` streams of `bptt` windows), over in-memory documents or over a token store's
memory-mapped files. Classifier: fastai's `SortedDL` (length-sorted batches, padded by
chunks as `TextDataLoaders` does).
"""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.text.data import LMDataLoader, SortedDL, TensorText, pad_input_chunk
from fastai.torch_core import TensorCategory

from ulmfit_cli.corpus.tokenize import PAD
from ulmfit_cli.errors import UlmfitError


def check_lm_size(n_tokens: int, bs: int, what: str) -> None:
    """fastai's LMDataLoader needs more than `bs` tokens for one batch; fail clearly before it does."""
    if (n_tokens - 1) // bs < 1:
        raise UlmfitError(f"{what} has {n_tokens} tokens: too small for one batch of train.bs={bs} "
                          f"(needs more than {bs} tokens; lower train.bs or add text)")


def lm_dls(train: list[np.ndarray], valid: list[np.ndarray], vocab: list[str], bs: int, bptt: int,
           device: torch.device) -> DataLoaders:
    check_lm_size(sum(map(len, train)), bs, "the training split")
    check_lm_size(sum(map(len, valid)), bs, "the validation split")
    as_t = lambda docs: [torch.from_numpy(d) for d in docs]  # noqa: E731
    trn = LMDataLoader(as_t(train), bs=bs, seq_len=bptt, shuffle=True, device=device)
    val = LMDataLoader(as_t(valid), bs=bs, seq_len=bptt, shuffle=False, device=device)
    dls = DataLoaders(trn, val, device=device)
    dls.vocab = vocab
    return dls


def _pieces(tokens: np.ndarray, offsets: np.ndarray, size: int) -> list[torch.Tensor]:
    """Memory-mapped views of runs of whole documents of about `size` tokens each.

    fastai's LMDataLoader shuffles these each epoch (a whole corpus of single documents would
    cost a Python object per article); the views read the file only when a batch needs it.
    """
    total = int(offsets[-1])
    cuts = offsets[np.searchsorted(offsets, np.arange(size, total, size))] if total > size else []
    bounds = np.unique(np.concatenate([[0], cuts, [total]])).astype(np.int64)
    return [torch.from_numpy(tokens[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _as_long(t: torch.Tensor) -> torch.Tensor:
    return t.long()  # the store keeps uint16/int32 ids; embeddings want int64


def store_lm_dls(store, bs: int, bptt: int, device: torch.device, piece_tokens: int = 1 << 20) -> DataLoaders:
    """LM DataLoaders reading a `TokenStore` through numpy.memmap."""
    loaders = []
    for split in ("train", "valid"):
        check_lm_size(store.n_tokens(split), bs, f"the {split} split of {store.path}")
        pieces = _pieces(store.tokens(split), store.offsets(split), piece_tokens)
        loaders.append(LMDataLoader(pieces, lens=[len(p) for p in pieces], bs=bs, seq_len=bptt,
                                    shuffle=split == "train", after_batch=_as_long, device=device))
    dls = DataLoaders(*loaders, device=device)
    dls.vocab = store.vocab
    return dls


class StreamLMLoader:
    """The AWD-LSTM batchify (`train.loader: stream`): the token stream as `bs` rows, moved to the
    device once, cut into `bptt` windows by slicing; no per-batch Python collation.

    Row r holds tokens [r*n, (r+1)*n) of the stream (n = (len - 1) // bs) and its targets are the
    same tokens shifted by one. With `shuffle`, each epoch starts its windows at a new random
    offset below `bptt` (the first window is shorter), so window edges move between epochs.
    """

    def __init__(self, tokens: np.ndarray, bs: int, bptt: int, device: torch.device, shuffle: bool = False,
                 seed: int = 0):
        n = (len(tokens) - 1) // bs
        stream = torch.from_numpy(np.asarray(tokens[: n * bs + 1], dtype=np.int64))
        self.x, self.y = stream[:-1].view(bs, n), stream[1:].view(bs, n)
        self.bs, self.bptt, self.n, self.shuffle = bs, bptt, n, shuffle
        self.rng = np.random.default_rng(seed)
        self._draw_offset()
        self.to(device)

    def to(self, device: torch.device) -> "StreamLMLoader":
        self.x, self.y, self.device = self.x.to(device), self.y.to(device), device
        return self

    def _draw_offset(self) -> None:
        """The next epoch's first window edge (fastai asks len() before it iterates)."""
        shift = self.shuffle and self.bptt > 1 and self.n > self.bptt
        self.starts = ([0] if shift else []) + list(range(int(self.rng.integers(1, self.bptt)) if shift else 0,
                                                          self.n, self.bptt))

    def __len__(self) -> int:
        return len(self.starts)

    def __iter__(self):
        starts = self.starts
        for a, b in zip(starts, starts[1:] + [self.n]):
            yield self.x[:, a:b], self.y[:, a:b]
        self._draw_offset()


def stream_lm_dls(train: np.ndarray, valid: np.ndarray, vocab: list[str], bs: int, bptt: int,
                  device: torch.device, seed: int = 0) -> DataLoaders:
    """LM DataLoaders over flat token arrays (a store's memmap, or concatenated documents)."""
    check_lm_size(len(train), bs, "the training split")
    check_lm_size(len(valid), bs, "the validation split")
    dls = DataLoaders(StreamLMLoader(train, bs, bptt, device, shuffle=True, seed=seed),
                      StreamLMLoader(valid, bs, bptt, device), device=device)
    dls.vocab = vocab
    return dls


def _samples(docs: list[np.ndarray], ys: np.ndarray) -> list[tuple]:
    return [(TensorText(torch.from_numpy(d)), TensorCategory(torch.tensor(int(y)))) for d, y in zip(docs, ys)]


def clf_dl(docs: list[np.ndarray], ys: np.ndarray, vocab: list[str], bs: int, bptt: int, device: torch.device,
           shuffle: bool = False) -> SortedDL:
    pad = partial(pad_input_chunk, pad_idx=vocab.index(PAD), pad_first=True, seq_len=bptt)
    # Training drops the last partial batch (as fastai does): a batch of one breaks BatchNorm.
    return SortedDL(_samples(docs, ys), bs=min(bs, len(docs)) if shuffle else bs, shuffle=shuffle,
                    drop_last=shuffle, before_batch=pad, device=device)


def clf_dls(train, train_y, valid, valid_y, vocab, bs, bptt, device) -> DataLoaders:
    if len(train) < 2:
        raise UlmfitError(f"the training split has {len(train)} document(s): too few for one batch")
    dls = DataLoaders(clf_dl(train, train_y, vocab, bs, bptt, device, shuffle=True),
                      clf_dl(valid, valid_y, vocab, bs * 2, bptt, device), device=device)
    dls.vocab = vocab
    return dls
