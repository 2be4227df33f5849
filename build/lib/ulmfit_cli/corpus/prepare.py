"""`ulmfit prepare`: stream a pretraining corpus into a token store, in bounded memory.

The parent process reads the input as a stream (a `.bz2` dump is decompressed and parsed
incrementally) and hands batches of pages to worker processes, which clean the markup,
tokenize with fastai's rules and return each batch as int32 ids over a batch-local
vocabulary. The parent maps those to corpus-wide provisional ids, counts them, appends them
to the train or valid file, and at the end builds the vocabulary from the counts and remaps
the files to final ids (`store.StoreWriter.finish`). Results are consumed in submission
order, so a store is the same whatever the number of workers.

Stores are cached under `data.cache_dir`, keyed by the input files (path, size, mtime) and
every setting that changes the tokens; a second run on the same input reuses the store.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ulmfit_cli.config import PretrainData
from ulmfit_cli.console import info, progress
from ulmfit_cli.corpus import tokenize as tok
from ulmfit_cli.corpus.text import UNK, apply_rules, init_worker, numericalize, tokenize_batch
from ulmfit_cli.corpus.store import COMPLETE, StoreWriter, TokenStore
from ulmfit_cli.corpus.tables import iter_text_documents
from ulmfit_cli.corpus.wikidump import DumpStats, clean_pages, is_dump, iter_pages
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import exclusive, input_path, staged
from ulmfit_cli.layout import SP_MODEL

STORE_VERSION = 1
TEXT_SUFFIXES = (".txt", ".tokens", ".raw")
_BATCH_CHARS = 1 << 20  # text per task sent to a worker


# ---------------------------------------------------------------- inputs
def input_files(source: Path) -> list[Path]:
    """The files a `data.source` stands for, in a fixed order."""
    if not source.is_dir():
        return [source]
    files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")
                   and (p.name.endswith(TEXT_SUFFIXES) or is_dump(p)))
    if not files:
        raise UlmfitError(f"data.source: {source} holds no dump parts (*pages-articles*.xml*.bz2) "
                          f"or text files ({', '.join(TEXT_SUFFIXES)})")
    return files


def _fixed_split(files: list[Path]) -> dict[Path, str] | None:
    """WikiText-style folders (`*train*` and `*valid*` files) keep their own split."""
    train = [f for f in files if "train" in f.name]
    valid = [f for f in files if "valid" in f.name]
    if train and valid:
        return {**{f: "train" for f in train}, **{f: "valid" for f in valid}}
    return None


def cache_key(data: PretrainData, seed: int, files: list[Path]) -> dict:
    # importing spaCy only for its version would cost 0.5 s per cache hit
    from importlib.metadata import version
    stats = [f.stat() for f in files]
    return {
        "version": STORE_VERSION,
        "files": [[str(f.resolve()), s.st_size, s.st_mtime_ns] for f, s in zip(files, stats)],
        "tokenizer": {"name": data.tokenizer, "lang": data.lang, "rules": "fastai-default",
                      "fastai": version("fastai"), "spacy": version("spacy"),
                      "sp_vocab_size": data.sp_vocab_size, "sp_train_chars": data.sp_train_chars},
        "encoding": data.encoding, "encoding_errors": data.encoding_errors,
        "max_vocab": data.max_vocab, "min_freq": data.min_freq,
        "valid_pct": data.valid_pct, "seed": seed, "max_docs": data.max_docs,
        "min_doc_chars": data.min_doc_chars,
    }


def store_path(data: PretrainData, source: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    stem = source.name.split(".")[0] or "corpus"
    root = data.cache_dir or os.environ.get("ULMFIT_CACHE") or "~/.cache/ulmfit"
    return Path(root).expanduser() / f"{stem}-{digest}"


# ---------------------------------------------------------------- workers
def _texts(kind: str, batch: list, min_chars: int, skipped: dict) -> list[str]:
    """Documents of a batch: dump pages cleaned (skips counted), text documents as they are."""
    return list(clean_pages(batch, skipped, min_chars)) if kind == "dump" else batch


def _work(kind: str, batch: list, min_chars: int) -> tuple:
    """Clean (dump pages), tokenize and encode one batch over a batch-local vocabulary
    (in a worker process set up by `tokenize.init_worker`)."""
    skipped: dict = {}
    local: dict[str, int] = {}
    lengths, ids = [], []
    for doc in tokenize_batch(_texts(kind, batch, min_chars, skipped)):
        lengths.append(len(doc))
        ids.extend(local.setdefault(t, len(local)) for t in doc)
    return (np.asarray(lengths, dtype=np.int64), np.asarray(ids, dtype=np.int32), list(local), skipped)


# ---------------------------------------------------------------- the stream
def _train_sentencepiece(files: list[Path], data: PretrainData, out_dir: Path) -> Path:
    """A first, partial pass: `data.sp_train_chars` of clean text after fastai's rules -> the model."""
    sample = out_dir / "sp_train.txt"
    size = 0
    with open(sample, "w", encoding="utf-8") as f:
        for kind, batch, _ in _jobs(files, data, DumpStats(), None):
            for text in _texts(kind, batch, data.min_doc_chars, {}):
                line = apply_rules(text).replace("\n", " ")
                f.write(line + "\n")
                size += len(line)
            if size >= data.sp_train_chars:
                break
    info(f"token store: training SentencePiece on {size / 1e6:.1f}M characters")
    try:
        model = tok.train_sentencepiece(sample, out_dir, data.sp_vocab_size)
    except RuntimeError as e:  # SentencePiece's trainer refuses too little text (or too small a vocab for it)
        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UlmfitError(f"data.source: SentencePiece could not be trained on {size:,} characters of clean "
                          f"text from {', '.join(map(str, files))} ({why}); give it more text, or set a "
                          f"smaller data.sp_vocab_size") from None
    return model.rename(out_dir / SP_MODEL)


def _jobs(files: list[Path], data: PretrainData, stats: DumpStats, bar) -> Iterator[tuple]:
    """(kind, batch, split-or-None) tuples of about `_BATCH_CHARS` characters each."""
    split = _fixed_split(files)
    done_bytes = 0
    for f in files:
        kind = "dump" if is_dump(f) else "text"
        words = data.tokenizer == "spacy"  # the English-rules warning concerns the word tokenizer only
        items = (iter_pages(f, stats, lang_warning=words, keep_truncated=data.keep_truncated)
                 if kind == "dump"
                 else iter_text_documents(f, "data.source", data.encoding, data.encoding_errors))
        batch, size = [], 0
        for item in items:
            batch.append(item)
            size += len(item[1]) if kind == "dump" else len(item)
            if size >= _BATCH_CHARS:
                if bar is not None:
                    bar.n = done_bytes + stats.bytes_read
                    bar.refresh()
                yield kind, batch, split and split[f]
                batch, size = [], 0
        if batch:
            yield kind, batch, split and split[f]
        done_bytes += f.stat().st_size
        stats.bytes_read = 0
    if bar is not None:
        bar.n = done_bytes
        bar.refresh()


def prepare(data: PretrainData, seed: int, force: bool = False) -> TokenStore:
    """The token store for `data` (built, or reused from the cache)."""
    source = input_path(data.source, "data.source")
    files = input_files(source)
    if data.tokenizer == "spacy":
        tok.check_lang(data.lang, "data.lang")
    key = cache_key(data, seed, files)
    path = store_path(data, source, key)
    # a second run waits, then reuses what the first built
    with exclusive(path, f"token store {path}", wait=True):
        if (path / COMPLETE).is_file() and not force:
            store = TokenStore.open(path)
            info(f"token store: reusing {path} ({store.stats['train_tokens']:,} train tokens)")
            return store
        info(f"token store: building {path}")
        with staged(path, f"token store {path}", force=True, locked=True) as partial:
            _build(data, seed, files, key, partial)  # an interrupted build is started again
        store = TokenStore.open(path)
        s = store.stats
        info(f"token store: {s['train_docs']:,} train / {s['valid_docs']:,} valid documents, "
             f"{s['train_tokens']:,} / {s['valid_tokens']:,} tokens, vocab {s['vocab_size']:,}, "
             f"unknown {s['unk_rate']:.2%}, {s['seconds']:.1f} s ({s['tokens_per_s']:,.0f} tokens/s)")
        if s.get("pages"):
            info(f"  {s['pages']:,} pages read, {s['articles']:,} articles kept, skipped: "
                 + ", ".join(f"{k} {v:,}" for k, v in s["skipped"].items()))
        return store


def _build(data: PretrainData, seed: int, files: list[Path], key: dict, partial: Path) -> None:
    t0 = time.perf_counter()
    workers = (os.cpu_count() or 1) if data.workers is None else data.workers
    writer = StoreWriter(partial)
    stats = DumpStats()
    stoi: dict[str, int] = {}
    itos: list[str] = []
    counts = np.zeros(1 << 16, dtype=np.int64)
    phase = np.random.default_rng(seed).random()  # systematic split: exactly valid_pct of documents
    n_docs = n_tokens = 0
    total_bytes = sum(f.stat().st_size for f in files)
    bar = progress(total=total_bytes, desc="prepare", unit="B", unit_scale=True)

    def consume(result, split) -> bool:
        nonlocal counts, n_docs, n_tokens
        lengths, ids, local_itos, local_skipped = result
        for reason, n in local_skipped.items():
            stats.skipped[reason] = stats.skipped.get(reason, 0) + n
        table = np.empty(len(local_itos), dtype=np.int32)
        for i, w in enumerate(local_itos):
            j = stoi.get(w)
            if j is None:
                j = stoi[w] = len(itos)
                itos.append(w)
            table[i] = j
        if data.max_docs is not None and n_docs + len(lengths) > data.max_docs:
            keep = data.max_docs - n_docs
            ids, lengths = ids[:lengths[:keep].sum()], lengths[:keep]
        gids = table[ids]
        if len(itos) > len(counts):
            counts = np.concatenate([counts,
                                     np.zeros(max(len(itos), 2 * len(counts)) - len(counts), np.int64)])
        counts[table] += np.bincount(ids, minlength=len(table))  # table is one-to-one: O(batch), not O(vocab)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        k = n_docs + np.arange(len(lengths))
        valid = (np.floor((k + 1) * data.valid_pct + phase) > np.floor(k * data.valid_pct + phase)
                 if split is None else np.full(len(lengths), split == "valid"))
        for name, mask in (("train", ~valid), ("valid", valid)):
            if mask.any():
                sel = np.concatenate([gids[s:e] for s, e in zip(starts[mask], ends[mask])])
                writer.add(name, sel, lengths[mask])
        n_docs += len(lengths)
        n_tokens += int(lengths.sum())
        elapsed = time.perf_counter() - t0
        bar.set_postfix(docs=f"{n_docs:,}", docs_s=f"{n_docs / elapsed:,.0f}",
                        tok_s=f"{n_tokens / elapsed:,.0f}", refresh=False)
        return data.max_docs is not None and n_docs >= data.max_docs

    try:
        sp_model = (_train_sentencepiece(files, data, writer.partial) if data.tokenizer == "sentencepiece"
                    else None)
        jobs = _jobs(files, data, stats, bar)
        if workers == 0:
            init_worker(sp_model, data.lang)
            for kind, batch, split in jobs:
                if consume(_work(kind, batch, data.min_doc_chars), split):
                    break
        else:
            with ProcessPoolExecutor(workers, initializer=init_worker,
                                     initargs=(sp_model, data.lang)) as ex:
                pending: deque = deque()
                stop = False
                for kind, batch, split in jobs:
                    pending.append((ex.submit(_work, kind, batch, data.min_doc_chars), split))
                    if len(pending) > 2 * workers:  # bounded in-flight work: bounded memory
                        fut, fut_split = pending.popleft()
                        if consume(fut.result(), fut_split):
                            stop = True
                            break
                while pending:
                    fut, split = pending.popleft()
                    if not stop and consume(fut.result(), split):
                        stop = True
                    fut.cancel()
        bar.close()
        if writer.n_docs("train") == 0:
            raise UlmfitError(f"data.source: {', '.join(map(str, files))}: no documents to train on")
        if writer.n_docs("valid") == 0:
            if writer.n_docs("train") < 2:
                raise UlmfitError(f"data.source: {files[0]} has a single document: need at least 2 to hold "
                                  f"some out for validation")
            writer.move_last_doc("train", "valid")
        _finish(writer, data, key, itos, counts[:len(itos)], stats, t0, total_bytes)
    except BaseException:
        bar.close()
        writer.close()
        raise


def _finish(writer: StoreWriter, data: PretrainData, key: dict, itos: list[str], counts: np.ndarray,
            stats: DumpStats, t0: float, n_bytes: int) -> None:
    vocab = tok.make_vocab(Counter(dict(zip(itos, counts.tolist()))), min_freq=data.min_freq,
                           max_vocab=data.max_vocab)
    remap = numericalize([itos], vocab)[0]  # provisional id -> final id
    n_unk = int(counts[remap == vocab.index(UNK)].sum())
    n_tokens = int(writer.offsets["train"][-1] + writer.offsets["valid"][-1])
    seconds = time.perf_counter() - t0
    out = {
        "pages": stats.pages, "articles": stats.pages - sum(stats.skipped.values()) if stats.pages else 0,
        "skipped": stats.skipped,
        "train_docs": writer.n_docs("train"), "valid_docs": writer.n_docs("valid"),
        "train_tokens": int(writer.offsets["train"][-1]), "valid_tokens": int(writer.offsets["valid"][-1]),
        "vocab_size": len(vocab), "unk_rate": n_unk / max(n_tokens, 1),
        "seconds": round(seconds, 2), "input_mb_per_s": round(n_bytes / 1e6 / seconds, 2),
        "tokens_per_s": round(n_tokens / seconds, 1), "truncated_input": stats.truncated,
    }
    writer.finish(vocab, remap, out, key)
