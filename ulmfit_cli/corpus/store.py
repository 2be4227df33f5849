"""The on-disk token store that `ulmfit prepare` writes and `ulmfit pretrain` trains from.

```
<store>/
  meta.json            what the store was built from (its cache key) and the tokenizer settings
  vocab.json           the vocabulary, fastai's order (special tokens first)
  train.bin, valid.bin flat token ids, uint16 when the vocab fits, else int32
  train.idx, valid.idx int64 document start offsets (n_docs + 1 entries)
  stats.json           articles kept, skipped by reason, tokens, unknown-token rate, seconds
  COMPLETE             written last: a store without it is never used
```
A store is built in `<store>.partial` and renamed into place once complete, so an interrupted
build never looks finished. Readers map the token files with `numpy.memmap`: nothing of the
corpus is loaded into RAM up front.
"""
from __future__ import annotations

import json
import os
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.layout import VOCAB, sp_model_in

COMPLETE = "COMPLETE"
SPLITS = ("train", "valid")
_REMAP_CHUNK = 1 << 22  # tokens remapped per step in finish(): about 24 MB, whatever the corpus size


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


@dataclass
class TokenStore:
    path: Path
    vocab: list[str]
    stats: dict

    @classmethod
    def open(cls, path: Path) -> "TokenStore":
        path = Path(path)
        if not (path / COMPLETE).is_file():
            raise UlmfitError(f"{path} is not a complete token store (no {COMPLETE} marker)")
        read = lambda name: json.loads((path / name).read_text(encoding="utf-8"))  # noqa: E731
        return cls(path=path, vocab=read(VOCAB), stats=read("stats.json"))

    @property
    def meta(self) -> dict:
        """What the store was built from: `prepare`'s cache key (input files, tokenizer, vocab settings)."""
        return json.loads((self.path / "meta.json").read_text(encoding="utf-8"))

    @property
    def sp_model(self) -> Path | None:
        return sp_model_in(self.path)

    def tokens(self, split: str) -> np.ndarray:
        dtype = token_dtype(len(self.vocab))
        file = self.path / f"{split}.bin"
        if file.stat().st_size == 0:
            return np.zeros(0, dtype=dtype)
        # copy-on-write: torch wants writable arrays; never written
        return np.memmap(file, dtype=dtype, mode="c")

    def offsets(self, split: str) -> np.ndarray:
        return np.fromfile(self.path / f"{split}.idx", dtype=np.int64)

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, document offsets) of a split, as the LM loaders take it."""
        return self.tokens(split), self.offsets(split)


class StoreWriter:
    """Appends documents as provisional int32 ids into the (staging) folder `partial`, then remaps them to the
    final vocab on finish(); `files.staged` publishes the folder."""

    def __init__(self, partial: Path):
        self.partial = Path(partial)
        self.files = {s: open(self.partial / f"{s}.tmp", "wb") for s in SPLITS}
        self.offsets = {s: array("q", [0]) for s in SPLITS}

    def add(self, split: str, ids: np.ndarray, lengths: np.ndarray) -> None:
        """Append documents: `ids` concatenated (int32 provisional ids), `lengths` one per document."""
        self.files[split].write(np.ascontiguousarray(ids, dtype=np.int32).tobytes())
        ends = self.offsets[split][-1] + np.cumsum(lengths, dtype=np.int64)
        self.offsets[split].extend(ends.tolist())

    def n_docs(self, split: str) -> int:
        return len(self.offsets[split]) - 1

    def move_last_doc(self, src: str, dst: str) -> None:
        """Move the last document of `src` to `dst` (a split must never end up empty)."""
        self.files[src].flush()
        start, end = self.offsets[src][-2], self.offsets[src][-1]
        with open(self.partial / f"{src}.tmp", "rb") as f:
            f.seek(start * 4)
            ids = np.frombuffer(f.read((end - start) * 4), dtype=np.int32)
        self.files[src].truncate(start * 4)
        self.files[src].seek(start * 4)
        self.offsets[src].pop()
        self.add(dst, ids, np.array([end - start]))

    def finish(self, vocab: list[str], remap: np.ndarray, stats: dict, meta: dict) -> None:
        """Remap provisional ids to final ids, write the metadata, mark complete."""
        dtype = token_dtype(len(vocab))
        remap = remap.astype(dtype)  # indexing with it then yields final ids with no int64 copy
        for split in SPLITS:
            self.files[split].close()
            tmp = self.partial / f"{split}.tmp"
            with open(tmp, "rb") as src, open(self.partial / f"{split}.bin", "wb") as dst:
                while chunk := src.read(_REMAP_CHUNK * 4):
                    dst.write(remap[np.frombuffer(chunk, dtype=np.int32)].tobytes())
            tmp.unlink()
            np.asarray(self.offsets[split], dtype=np.int64).tofile(self.partial / f"{split}.idx")
        for name, obj in ((VOCAB, vocab), ("stats.json", stats), ("meta.json", meta)):
            (self.partial / name).write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
        with open(self.partial / COMPLETE, "w") as f:
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        """After a failure (the staging folder is removed by `files.staged`)."""
        for f in self.files.values():
            f.close()
