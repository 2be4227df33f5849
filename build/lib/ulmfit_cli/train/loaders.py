"""DataLoaders over already-numericalized documents: the one place that batches tokens, for training
and for inference.

Language model (`lm_loaders` chooses, by the same rules in every stage): `train.loader: stream`, the
AWD-LSTM batchify kept on the device (`StreamLMLoader`), or `fastai`, fastai's `LMDataLoader`
(documents shuffled each epoch, concatenated, cut into `bs` streams of `bptt` windows). Both take
a split as a flat token array with document offsets: a token store's memory-mapped files or
concatenated in-memory documents. Classifier: fastai's `SortedDL` (length-sorted batches, padded by
chunks as `TextDataLoaders` does), also what `ulmfit predict` batches with.

Every training loader has `state_dict`/`load_state_dict` (its random state), which checkpoints collect.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.text.data import LMDataLoader, SortedDL, TensorText
from fastai.torch_core import TensorCategory, TensorMultiCategory
from fastcore.foundation import L

from ulmfit_cli.corpus.direction import orient_stream
from ulmfit_cli.corpus.text import PAD
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.train import distributed
from ulmfit_cli.train.batches import pad_chunks

Split = tuple  # (tokens: np.ndarray, offsets: np.ndarray of document starts, n_docs + 1 entries)


def as_split(docs: list[np.ndarray]) -> Split:
    """In-memory documents as one token array with their offsets."""
    return np.concatenate(docs), np.cumsum([0] + [len(d) for d in docs])


class _RandomState:
    """`state_dict` for fastai's DataLoader, whose order comes from its `random.Random` (and the global RNGs,
    which checkpoints keep themselves)."""

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["rng"])


class _LMDataLoader(_RandomState, LMDataLoader):
    """Its document order is also state: each epoch's shuffle permutes the previous epoch's order in place
    (fastcore's ReindexCollection.shuffle)."""

    def state_dict(self) -> dict:
        return {**super().state_dict(), "order": [int(i) for i in self.items.idxs]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        order = L(state["order"])
        self.items.reindex(order)
        self.lens.reindex(order)
        self.make_chunks()


class _SortedDL(_RandomState, SortedDL):
    """With `weights` (one per document), each epoch draws its documents with replacement in proportion to
    them, from the loader's own generator (so checkpoints keep it), then sorts them by length in chunks as
    SortedDL does; fastai's WeightedDL would do the draw, but is not a SortedDL."""

    def __init__(self, *args, weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.weights = weights

    def shuffle_fn(self, idxs):
        if self.weights is None:
            return super().shuffle_fn(idxs)
        return self.rng.choices(idxs, weights=self.weights, k=len(idxs))


def check_lm_size(n_tokens: int, bs: int, what: str) -> None:
    """fastai's LMDataLoader needs more than `bs` tokens for one batch; fail clearly before it does."""
    if (n_tokens - 1) // bs < 1:
        raise UlmfitError(f"{what} has {n_tokens} tokens: too small for one batch of train.bs={bs} "
                          f"(needs more than {bs} tokens; lower train.bs or add text)")


def _single_process(what: str) -> None:
    if distributed.world().active:
        raise UlmfitError(f"a multi-process run needs train.loader: stream ({what} is not split "
                          f"between processes)")


def _pieces(tokens: np.ndarray, offsets: np.ndarray, size: int | None) -> list[torch.Tensor]:
    """Views of runs of whole documents of about `size` tokens each (`None`: one per document).

    fastai's LMDataLoader shuffles these each epoch (a whole Wikipedia of single documents would
    cost a Python object per article); views of a memmap read the file only when a batch needs it.
    """
    total = int(offsets[-1])
    if size is None:
        cuts = offsets
    else:
        cuts = offsets[np.searchsorted(offsets, np.arange(size, total, size))] if total > size else []
    bounds = np.unique(np.concatenate([[0], cuts, [total]])).astype(np.int64)
    return [torch.from_numpy(tokens[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _as_long(t: torch.Tensor) -> torch.Tensor:
    return t.long()  # the store keeps uint16/int32 ids; embeddings want int64


def fastai_lm_dls(train: Split, valid: Split, vocab: list[str], bs: int, bptt: int, device: torch.device,
                  piece_tokens: int | None = None) -> DataLoaders:
    """fastai's LMDataLoader over a split's documents (`piece_tokens`: shuffled in runs of about that many
    tokens instead, for a token store's millions of articles)."""
    _single_process("fastai's LMDataLoader")
    loaders = []
    for name, (tokens, offsets) in (("training", train), ("validation", valid)):
        check_lm_size(len(tokens), bs, f"the {name} split")
        pieces = _pieces(tokens, offsets, piece_tokens)
        loaders.append(_LMDataLoader(pieces, lens=[len(p) for p in pieces], bs=bs, seq_len=bptt,
                                     shuffle=name == "training", after_batch=_as_long, device=device))
    dls = DataLoaders(*loaders, device=device)
    dls.vocab = vocab
    return dls


def lm_loaders(train: Split, valid: Split, vocab: list[str], train_cfg, device: torch.device, seed: int,
               backwards: bool, piece_tokens: int | None = None) -> DataLoaders:
    """The language-model DataLoaders of every stage: `train.loader` picks the loader, `backwards` reads
    both splits backwards (with either loader)."""
    train, valid = orient_stream(*train, backwards), orient_stream(*valid, backwards)
    if train_cfg.loader == "fastai":
        return fastai_lm_dls(train, valid, vocab, train_cfg.bs, train_cfg.bptt, device, piece_tokens)
    return stream_lm_dls(train[0], valid[0], vocab, train_cfg.bs, train_cfg.bptt, device, seed,
                         train_cfg.random_bptt, train[1])


class StreamLMLoader:
    """The AWD-LSTM batchify (`train.loader: stream`): the token stream as `bs` rows, kept on the
    device, cut into windows by slicing; no per-batch Python collation.

    Each epoch's stream is the documents concatenated (in a new random order each training epoch,
    as fastai's LMDataLoader does; the shuffle is one gather on the device). Row r holds tokens
    [r*n, (r+1)*n) of it (n = (len - 1) // bs) and its targets are the same tokens shifted by one.
    With `shuffle`, each epoch also starts its windows at a new random offset below `bptt` (the
    first window is shorter); with `random_bptt`, window lengths are drawn as in the AWD-LSTM paper
    instead (bptt, or bptt/2 one time in 20, plus N(0, 5), at least 5). Either way the windows of
    an epoch tile each row once.
    """

    def __init__(self, tokens: np.ndarray, bs: int, bptt: int, device: torch.device,
                 offsets: np.ndarray | None = None, shuffle: bool = False, seed: int = 0,
                 random_bptt: bool = False, rows: slice = slice(None)):
        offsets = np.asarray([0, len(tokens)] if offsets is None else offsets, dtype=np.int64)
        # int32 on the device (half of int64); each window is cast to int64 as the embedding wants
        self.tokens = torch.from_numpy(np.asarray(tokens, dtype=np.int32))
        self.doc_starts, self.doc_lens = torch.from_numpy(offsets[:-1]), torch.from_numpy(np.diff(offsets))
        self.bs, self.bptt, self.n, self.shuffle = bs, bptt, (len(tokens) - 1) // bs, shuffle
        self.random_bptt = random_bptt and shuffle
        self.rows = rows  # a multi-process run trains its share of the bs rows (same windows everywhere)
        self.rng = np.random.default_rng(seed)
        self._draw_windows()
        self.to(device)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "starts": list(self.starts)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.starts = list(state["starts"])

    def to(self, device: torch.device) -> "StreamLMLoader":
        self.tokens, self.device = self.tokens.to(device), device
        self.doc_starts, self.doc_lens = self.doc_starts.to(device), self.doc_lens.to(device)
        return self

    def _draw_windows(self) -> None:
        """The next epoch's window starts (fastai asks len() before it iterates)."""
        if self.random_bptt:
            starts, pos = [], 0
            while pos < self.n:
                starts.append(pos)
                base = self.bptt if self.rng.random() < 0.95 else self.bptt / 2
                pos += max(5, int(self.rng.normal(base, 5)))
            self.starts = starts
            return
        shift = self.shuffle and self.bptt > 1 and self.n > self.bptt
        first = int(self.rng.integers(1, self.bptt)) if shift else 0
        self.starts = ([0] if shift else []) + list(range(first, self.n, self.bptt))

    def epoch_stream(self) -> torch.Tensor:
        """The tokens in this epoch's document order."""
        if not self.shuffle or len(self.doc_lens) < 2:
            return self.tokens
        perm = torch.from_numpy(self.rng.permutation(len(self.doc_lens))).to(self.device)
        lens, starts = self.doc_lens[perm], self.doc_starts[perm]
        shift = starts - (torch.cumsum(lens, 0) - lens)  # old start - new start, per document
        idx = torch.repeat_interleave(shift, lens, output_size=len(self.tokens))
        return self.tokens[idx + torch.arange(len(self.tokens), device=self.device)]

    def __len__(self) -> int:
        return len(self.starts)

    def __iter__(self):
        stream, n, starts = self.epoch_stream(), self.n, self.starts
        x = stream[: n * self.bs].view(self.bs, n)[self.rows]
        y = stream[1: n * self.bs + 1].view(self.bs, n)[self.rows]
        for a, b in zip(starts, starts[1:] + [n]):
            yield x[:, a:b].long(), y[:, a:b].long()
        self._draw_windows()


def stream_lm_dls(train: np.ndarray, valid: np.ndarray, vocab: list[str], bs: int, bptt: int,
                  device: torch.device, seed: int = 0, random_bptt: bool = False,
                  train_offsets: np.ndarray | None = None) -> DataLoaders:
    """LM DataLoaders over flat token arrays (a store's memmap, or concatenated documents);
    `train_offsets` (document boundaries) lets each training epoch shuffle the documents."""
    check_lm_size(len(train), bs, "the training split")
    check_lm_size(len(valid), bs, "the validation split")
    trn = StreamLMLoader(train, bs, bptt, device, train_offsets, shuffle=True, seed=seed,
                         random_bptt=random_bptt, rows=distributed.local_rows(bs))
    dls = DataLoaders(trn, StreamLMLoader(valid, bs, bptt, device), device=device)
    dls.vocab = vocab
    return dls


def _target(y) -> torch.Tensor:
    """A document's target as fastai's blocks make it: a class index (CategoryBlock), a 0/1 float per
    label (MultiCategoryBlock's one-hot encoding) or a float (RegressionBlock)."""
    if np.ndim(y):
        return TensorMultiCategory(torch.as_tensor(y, dtype=torch.float32))
    if np.issubdtype(np.asarray(y).dtype, np.integer):
        return TensorCategory(torch.tensor(int(y)))
    return torch.tensor(float(y), dtype=torch.float32)


def _samples(docs: list[np.ndarray], ys: np.ndarray) -> list[tuple]:
    return [(TensorText(torch.from_numpy(d)), _target(y)) for d, y in zip(docs, ys)]


def clf_dl(docs: list[np.ndarray], ys: np.ndarray, vocab: list[str], bs: int, bptt: int, device: torch.device,
           shuffle: bool = False, weights: list[float] | None = None) -> SortedDL:
    pad = partial(_pad_batch, pad=vocab.index(PAD), bptt=bptt)
    # Training drops the last partial batch (as fastai does): a batch of one breaks BatchNorm.
    return _SortedDL(_samples(docs, ys), bs=min(bs, len(docs)) if shuffle else bs, shuffle=shuffle,
                     drop_last=shuffle, before_batch=pad, device=device, weights=weights)


def _pad_batch(samples: list[tuple], pad: int, bptt: int) -> list[tuple]:
    """fastai's `pad_input_chunk` to whole bptt chunks (`batches.pad_chunks`: with fastai's width, the
    SentenceEncoder skips some short texts of a batch that holds longer ones)."""
    rows = pad_chunks([np.asarray(s[0]) for s in samples], pad, bptt)
    return [(TensorText(torch.from_numpy(r)), *s[1:]) for r, s in zip(rows, samples)]


def balanced_weights(ys: np.ndarray) -> list[float]:
    """One sampling weight per document: 1 / the size of its class, so every class is drawn equally often."""
    counts = np.bincount(ys)
    return (1.0 / counts[ys]).tolist()


def clf_dls(train, train_y, valid, valid_y, vocab, bs, bptt, device, seed: int = 0,
            balanced: bool = False) -> DataLoaders:
    if len(train) < 2:
        raise UlmfitError(f"the training split has {len(train)} document(s): too few for one batch")
    weights = balanced_weights(np.asarray(train_y)) if balanced else None
    if distributed.world().active:  # bs stays the global batch: each rank trains every N-th batch of bs / N
        if balanced:
            raise UlmfitError("train.sampler: balanced is not supported in a multi-process run yet; use "
                              "train.class_weights: balanced")
        rows = distributed.local_rows(bs)
        trn = distributed.ShardedDL(clf_dl(train, train_y, vocab, rows.stop - rows.start, bptt, device,
                                           shuffle=True), seed)
    else:
        trn = clf_dl(train, train_y, vocab, bs, bptt, device, shuffle=True, weights=weights)
    dls = DataLoaders(trn,
                      clf_dl(valid, valid_y, vocab, bs * 2, bptt, device), device=device)
    dls.vocab = vocab
    return dls
