"""`ulmfit prepare`: stream a pretraining corpus into a token store, in bounded memory.

The parent process schedules: it hands pieces of whole pages to worker processes
(`wikidump.chunks`: byte ranges of a multistream dump's bz2 streams, which the workers read,
decompress and parse themselves; a single-stream dump's XML cut at page ends) or batches of text
documents, and the workers clean the markup, tokenize with fastai's rules and return each batch
as int32 ids over a batch-local vocabulary. The parent maps those to corpus-wide provisional ids,
counts them, appends them to the train or valid file, and at the end builds the vocabulary from
the counts and remaps the files to final ids (`store.StoreWriter.finish`). Results are consumed in submission
order, so a store is the same whatever the number of workers.

Stores are cached under `data.cache_dir`, keyed by the input files (path, size, mtime) and
every setting that changes the tokens; a second run on the same input reuses the store.
"""
from __future__ import annotations

import hashlib
import json
import marshal
import os
import resource
import shutil
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import closing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ulmfit_cli.config import PretrainData
from ulmfit_cli.console import info, progress
from ulmfit_cli.corpus import tokenize as tok
from ulmfit_cli.corpus.text import (UNK, WordTokenizer, apply_rules, init_worker, numericalize,
                                   tokenize_batch, worker_tokenizer)
from ulmfit_cli.corpus.store import COMPLETE, StoreWriter, TokenStore
from ulmfit_cli.corpus.tables import iter_text_documents
from ulmfit_cli.corpus.wikidump import (BrokenChunk, DumpStats, broken, check_head, chunks, clean_pages,
                                        is_dump, is_index, pages_of)
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import exclusive, input_path, staged
from ulmfit_cli.layout import SP_MODEL

STORE_VERSION = 1
TEXT_SUFFIXES = (".txt", ".tokens", ".raw")
_BATCH_CHARS = 1 << 20  # text per task sent to a worker
PROJECT_AFTER_S = 60.0  # when prepare says how long it will take


# ---------------------------------------------------------------- inputs
def input_files(source: Path) -> list[Path]:
    """The files a `data.source` stands for, in a fixed order."""
    if not source.is_dir():
        return [source]
    files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")
                   and not is_index(p) and (p.name.endswith(TEXT_SUFFIXES) or is_dump(p)))
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
                      "sp_vocab_size": data.sp_vocab_size, "sp_train_chars": data.sp_train_chars,
                      "sp_trainer": 2},  # 2: paragraphs as lines, sampled, byte_fallback
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
def _texts(kind: str, batch, min_chars: int, skipped: dict) -> tuple[list[str], DumpStats | None, str | None]:
    """Documents of a job, the pages read and where the piece breaks off: a dump's piece read
    (`wikidump.pages_of`) and its pages cleaned (skips counted), text documents as they are."""
    if kind != "dump":
        return batch, None, None
    pages, stats, why = pages_of(batch)
    for reason, n in stats.skipped.items():
        skipped[reason] = skipped.get(reason, 0) + n
    return list(clean_pages(pages, skipped, min_chars)), stats, why


# The word tokenizer asks spaCy about each word its memo has not seen: every worker would learn the corpus's
# common words anew (on the benchmark dump, whose text repeats, 2 workers asked spaCy about 107k runs to
# 1 worker's 54k; sharing them as follows, 65k). So each worker appends what it learnt in a job to a file
# of its own in a folder they share, and reads the others' files before its next job. Files, not the
# parent: a job's words reach the others as soon as it ends, and the parent, the one process that does not
# scale, passes nothing on.
_SHARE_MAX = 1 << 17   # runs one worker passes on: the common words come first, a rare one seldom recurs
_shared: dict = {}     # in a worker: the folder, its own file, the bytes taken of each other file, runs given


def _init_worker(sp_model: Path | None, lang: str, folder: Path | None) -> None:
    init_worker(sp_model, lang)
    _shared.clear()
    if folder is not None and isinstance(worker_tokenizer(), WordTokenizer):
        _shared.update(folder=folder, own=f"{os.getpid()}.words", taken={}, given=0)
        worker_tokenizer().learnt = []  # it notes what it learns from now on


def _take_words() -> int:
    """Teach this worker's tokenizer what the other workers wrote since its last job; returns the new runs."""
    if not _shared:
        return 0
    new = 0
    for entry in os.scandir(_shared["folder"]):
        if entry.name == _shared["own"]:
            continue
        pos = _shared["taken"].get(entry.name, 0)
        with open(entry.path, "rb") as f:
            f.seek(pos)
            data = f.read()
        i = 0
        while i + 8 <= len(data):  # records: 8 bytes of length, then a marshalled dict
            n = int.from_bytes(data[i:i + 8], "little")
            if i + 8 + n > len(data):
                break  # still being written: next time
            new += worker_tokenizer().teach(marshal.loads(data[i + 8:i + 8 + n]))
            i += 8 + n
        _shared["taken"][entry.name] = pos + i
    return new


def _give_words() -> None:
    """Append what this worker's tokenizer learnt in its job to its own file (up to `_SHARE_MAX` runs)."""
    learnt = worker_tokenizer().take_learnt() if _shared else None
    if not learnt or _shared["given"] >= _SHARE_MAX:
        return
    blob = marshal.dumps(learnt)
    with open(_shared["folder"] / _shared["own"], "ab") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
    _shared["given"] += len(learnt)


def _work(kind: str, batch, min_chars: int) -> tuple:
    """Read (a dump's piece), clean, tokenize and encode one job over a batch-local vocabulary
    (in a worker process set up by `_init_worker`); the words the other workers learnt are taken first."""
    skipped: dict = {}
    local: dict[str, int] = {}
    lengths, ids = [], []
    texts, read, why = _texts(kind, batch, min_chars, skipped)
    taken = _take_words()
    for doc in tokenize_batch(texts):
        lengths.append(len(doc))
        ids.extend(local.setdefault(t, len(local)) for t in doc)
    _give_words()
    return (np.asarray(lengths, dtype=np.int64), np.asarray(ids, dtype=np.int32), list(local), skipped,
            read and read.pages, taken, why and (why, read.bytes_read))


# ---------------------------------------------------------------- the stream
def _train_sentencepiece(files: list[Path], data: PretrainData, out_dir: Path, stats: DumpStats,
                         workers: int) -> Path:
    """A first, partial pass on `workers` processes: about `data.sp_train_chars` of clean text after fastai's
    rules, a paragraph a line, taken from pieces spread over the whole corpus where it is a multistream dump
    (else from its beginning); the trainer keeps the first `tokenize.SP_SENTENCES` of those lines -> the
    model. The sample's size goes to the store's stats."""
    sample = out_dir / "sp_train.txt"
    size = lines = 0
    t0 = time.perf_counter()
    jobs = ((_sample_lines, kind, job, data.min_doc_chars) for kind, job, _, _ in _spread(_jobs(files, data,
                                                                                                DumpStats())))
    with open(sample, "w", encoding="utf-8") as f, closing(_in_order(jobs, workers)) as pieces:
        for piece in pieces:
            f.writelines(line + "\n" for line in piece)
            size, lines = size + sum(map(len, piece)), lines + len(piece)
            if size >= data.sp_train_chars:
                break
    info(f"token store: training SentencePiece on {size / 1e6:.1f}M characters ({lines:,} lines; the trainer "
         f"keeps {min(lines, tok.SP_SENTENCES):,})")
    t1 = time.perf_counter()
    try:
        model = tok.train_sentencepiece(sample, out_dir, data.sp_vocab_size)
    except RuntimeError as e:  # SentencePiece's trainer refuses too little text (or too small a vocab for it)
        why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UlmfitError(f"data.source: SentencePiece could not be trained on {size:,} characters of clean "
                          f"text from {', '.join(map(str, files))} ({why}); give it more text, or set a "
                          f"smaller data.sp_vocab_size") from None
    stats.sp_sample = {"chars": size, "lines": lines, "input_sentence_size": tok.SP_SENTENCES,
                       "read_seconds": round(t1 - t0, 2), "train_seconds": round(time.perf_counter() - t1, 2)}
    info(f"token store: SentencePiece trained in {stats.sp_sample['train_seconds']:.1f} s (its sample read "
         f"in {stats.sp_sample['read_seconds']:.1f} s)")
    return model.rename(out_dir / SP_MODEL)


def _sample_lines(kind: str, job, min_chars: int) -> list[str]:
    """A job's clean text after fastai's rules, a paragraph a line (SentencePiece's sample; in a worker). A
    damaged piece gives none: the token pass says what is wrong with it."""
    if isinstance(job, BrokenChunk):
        return []
    texts = _texts(kind, job, min_chars, {})[0]
    return [line for text in texts for line in apply_rules(text).split("\n") if line.strip()]


def _in_order(calls: Iterator[tuple], workers: int) -> Iterator:
    """fn(*args) for each (fn, *args), in order, on `workers` processes (0: here), at most 2 x workers in
    flight; what is still pending when the caller stops is cancelled."""
    if not workers:
        yield from (fn(*args) for fn, *args in calls)
        return
    with ProcessPoolExecutor(workers) as ex:
        pending: deque = deque()
        try:
            for fn, *args in calls:
                pending.append(ex.submit(fn, *args))
                if len(pending) > 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _spread(jobs: Iterator[tuple]) -> Iterator[tuple]:
    """The jobs, those of multistream dumps (byte ranges) last and in an order whose every beginning is
    spread over the whole corpus (bit-reversed: the middle, then the quarters, ...)."""
    ranges = []
    for item in jobs:
        if isinstance(item[1], tuple):
            ranges.append(item)
        else:
            yield item
    bits = max(1, (len(ranges) - 1).bit_length())
    yield from (ranges[i] for i in sorted(range(len(ranges)), key=lambda i: int(f"{i:0{bits}b}"[::-1], 2)))


def _jobs(files: list[Path], data: PretrainData, stats: DumpStats, bar=None,
          warn: bool = False) -> Iterator[tuple]:
    """(kind, job, split-or-None, file) tuples: a dump's pieces (`wikidump.chunks`, a `BrokenChunk` where
    the file breaks off), or batches of about `_BATCH_CHARS` characters of a text file's documents."""
    split = _fixed_split(files)
    done_bytes = 0
    for f in files:
        if is_dump(f):
            check_head(f, lang_warning=warn and data.tokenizer == "spacy")  # the English rules: words only
            for job in chunks(f, stats):
                if bar is not None:
                    bar.n = done_bytes + stats.bytes_read
                    bar.refresh()
                yield "dump", job, split and split[f], f
        else:
            batch, size = [], 0
            for doc in iter_text_documents(f, "data.source", data.encoding, data.encoding_errors):
                batch.append(doc)
                size += len(doc)
                if size >= _BATCH_CHARS:
                    yield "text", batch, split and split[f], f
                    batch, size = [], 0
            if batch:
                yield "text", batch, split and split[f], f
        done_bytes += f.stat().st_size
        stats.bytes_read = 0
    if bar is not None:
        bar.n = done_bytes
        bar.refresh()


def prepare(data: PretrainData, seed: int, force: bool = False) -> TokenStore:
    """The token store for `data` (built, or reused from the cache; or `data.source` itself where it is a
    store, built on another machine)."""
    source = input_path(data.source, "data.source")
    if (source / COMPLETE).is_file():
        return _given_store(source, data)
    files = input_files(source)
    key = cache_key(data, seed, files)
    path = store_path(data, source, key)
    if data.tokenizer == "spacy" and not (path / COMPLETE).is_file():  # a store was built with a valid one
        tok.check_lang(data.lang, "data.lang")
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


def _given_store(path: Path, data: PretrainData) -> TokenStore:
    """A finished store named as `data.source` (`prepare` on a CPU machine, `pretrain` where the GPU is), used
    as it is: its split and documents are its own; the settings that decide what its ids mean must be the
    config's, since later stages tokenize with them."""
    store = TokenStore.open(path)
    built = store.meta
    tokenizer = built["tokenizer"]
    theirs = {"data.tokenizer": tokenizer["name"], "data.lang": tokenizer["lang"],
              "data.max_vocab": built["max_vocab"], "data.min_freq": built["min_freq"]}
    ours = {"data.tokenizer": data.tokenizer, "data.lang": data.lang, "data.max_vocab": data.max_vocab,
            "data.min_freq": data.min_freq}
    differ = [f"{k}: {theirs[k]!r} there, {ours[k]!r} here" for k in theirs if theirs[k] != ours[k]]
    if differ:
        raise UlmfitError(f"data.source: the token store {path} was built with other settings ("
                          + "; ".join(differ) + "): set them as the store has them, or point data.source at "
                          "the corpus to build a store")
    info(f"token store: using {path} as it is ({store.stats['train_tokens']:,} train tokens, built from "
         f"{', '.join(Path(f[0]).name for f in built['files'])})")
    return store


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds so far of this process, and of its child processes that have ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _build(data: PretrainData, seed: int, files: list[Path], key: dict, partial: Path) -> None:
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    workers = (os.cpu_count() or 1) if data.workers is None else data.workers
    writer = StoreWriter(partial)
    stats = DumpStats()
    stoi: dict[str, int] = {}
    itos: list[str] = []
    counts = np.zeros(1 << 16, dtype=np.int64)
    phase = np.random.default_rng(seed).random()  # systematic split: exactly valid_pct of documents
    n_docs = n_tokens = 0
    total_bytes = sum(f.stat().st_size for f in files)
    info(f"token store: reading {total_bytes / 1e6:,.1f} MB in {len(files)} file(s) with {workers} "
         f"worker(s); the time it will take is projected after a minute")
    bar = progress(total=total_bytes, desc="prepare", unit="B", unit_scale=True)
    projected = [False]

    def consume(result, split) -> bool:
        nonlocal counts, n_docs, n_tokens
        lengths, ids, local_itos, local_skipped, pages, taken, _ = result
        stats.pages += pages or 0
        stats.shared_words += taken
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
        if elapsed > PROJECT_AFTER_S and not projected[0] and 0 < bar.n < total_bytes:
            projected[0] = True  # once, said as a line (the bar's own ETA is gone in a log)
            info(f"token store: {bar.n / total_bytes:.0%} read in {elapsed / 60:.1f} min at "
                 f"{bar.n / 1e6 / elapsed:.2f} MB/s: about {elapsed * total_bytes / bar.n / 60:,.0f} min in "
                 f"all, {elapsed * (total_bytes / bar.n - 1) / 60:,.0f} min left")
        bar.set_postfix(docs=f"{n_docs:,}", docs_s=f"{n_docs / elapsed:,.0f}",
                        tok_s=f"{n_tokens / elapsed:,.0f}", refresh=False)
        return data.max_docs is not None and n_docs >= data.max_docs

    cut_off: set[Path] = set()  # files that broke off (data.keep_truncated): their later pieces are dropped

    def take(outcome, split, f) -> bool:
        """Consume one job's outcome in order: a result, a future of one, or where the file breaks off."""
        if f in cut_off:
            return False
        if isinstance(outcome, BrokenChunk):
            why = str(outcome)
        else:
            result = outcome.result() if hasattr(outcome, "result") else outcome
            if consume(result, split):
                return True
            if not result[-1]:
                return False
            why, stats.bytes_read = result[-1]
        broken(f, why, stats, data.keep_truncated)  # raises, unless the whole pages before are kept
        cut_off.add(f)
        return False

    try:
        sp_model = (_train_sentencepiece(files, data, writer.partial, stats, workers)
                    if data.tokenizer == "sentencepiece" else None)
        jobs = _jobs(files, data, stats, bar, warn=True)
        init_worker(sp_model, data.lang)  # here, once (or kept from check_lang): forked workers start with it
        if workers == 0:
            for kind, job, split, f in jobs:
                if take(job if isinstance(job, BrokenChunk) or f in cut_off
                        else _work(kind, job, data.min_doc_chars), split, f):
                    break
        else:
            words = writer.partial / "shared-words" if workers > 1 else None  # the workers' learnt words
            if words:
                words.mkdir()
            with ProcessPoolExecutor(workers, initializer=_init_worker,
                                     initargs=(sp_model, data.lang, words)) as ex:
                pending: deque = deque()
                stop = False
                for kind, job, split, f in jobs:
                    pending.append((job if isinstance(job, BrokenChunk)
                                    else ex.submit(_work, kind, job, data.min_doc_chars), split, f))
                    if len(pending) > 2 * workers:  # bounded in-flight work: bounded memory
                        if take(*pending.popleft()):
                            stop = True
                            break
                while pending:
                    outcome, split, f = pending.popleft()
                    if not stop and take(outcome, split, f):
                        stop = True
                    if hasattr(outcome, "cancel"):
                        outcome.cancel()
            if words:
                shutil.rmtree(words)
        bar.close()
        if writer.n_docs("train") == 0:
            raise UlmfitError(f"data.source: {', '.join(map(str, files))}: no documents to train on")
        if writer.n_docs("valid") == 0:
            if writer.n_docs("train") < 2:
                raise UlmfitError(f"data.source: {files[0]} has a single document: need at least 2 to hold "
                                  f"some out for validation")
            writer.move_last_doc("train", "valid")
        _finish(writer, data, key, itos, counts[:len(itos)], stats, t0, cpu0, total_bytes)
    except BaseException:
        bar.close()
        writer.close()
        raise


def _finish(writer: StoreWriter, data: PretrainData, key: dict, itos: list[str], counts: np.ndarray,
            stats: DumpStats, t0: float, cpu0: tuple[float, float], n_bytes: int) -> None:
    vocab = tok.make_vocab(Counter(dict(zip(itos, counts.tolist()))), min_freq=data.min_freq,
                           max_vocab=data.max_vocab)
    remap = numericalize([itos], vocab)[0]  # provisional id -> final id
    n_unk = int(counts[remap == vocab.index(UNK)].sum())
    n_tokens = int(writer.offsets["train"][-1] + writer.offsets["valid"][-1])
    seconds = time.perf_counter() - t0
    # where the time went: the parent (scheduling, counting, writing) against the workers it waited for
    parent_cpu, workers_cpu = (now - then for now, then in zip(_cpu_seconds(), cpu0))
    out = {
        "pages": stats.pages, "articles": stats.pages - sum(stats.skipped.values()) if stats.pages else 0,
        "skipped": stats.skipped,
        "train_docs": writer.n_docs("train"), "valid_docs": writer.n_docs("valid"),
        "train_tokens": int(writer.offsets["train"][-1]), "valid_tokens": int(writer.offsets["valid"][-1]),
        "vocab_size": len(vocab), "unk_rate": n_unk / max(n_tokens, 1),
        "seconds": round(seconds, 2), "input_mb_per_s": round(n_bytes / 1e6 / seconds, 2),
        "parent_cpu_seconds": round(parent_cpu, 2), "workers_cpu_seconds": round(workers_cpu, 2),
        "tokens_per_s": round(n_tokens / seconds, 1), "truncated_input": stats.truncated,
        "words_shared_between_workers": stats.shared_words,
        **({"sentencepiece_sample": stats.sp_sample} if stats.sp_sample else {}),
    }
    writer.finish(vocab, remap, out, key)
