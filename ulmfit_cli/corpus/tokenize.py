"""Tokenizing many documents (on a process pool when there are enough of them), vocab and numericalization.

The tokenizers are `corpus.text`'s: fastai's word tokenization (spaCy's blank pipeline for `data.lang` +
fastai's default rules) or SentencePiece, producing exactly what `TextBlock`/`tokenize_df` produce
(`xxbos`, `xxmaj`, `xxup`, `xxrep`, `xxwrep`), so vocabularies stay compatible with fastai's pretrained
models. Documents are tokenized in batches so a progress bar can follow the work; `prepare` uses the
same worker entry points.
"""
from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from fastai.text.data import make_vocab

from ulmfit_cli.console import progress
from ulmfit_cli.corpus.text import PAD, SPECIAL_TOKENS, UNK, make_tokenizer, numericalize  # noqa: F401
from ulmfit_cli.errors import UlmfitError

_BATCH_CHARS = 200_000     # text per task sent to a worker
_IN_PROCESS_CHARS = 1_000_000  # below this, starting workers costs more than it saves
_BAR_DOCS = 10_000         # fewer documents take well under a second in one process: no bar


def train_sentencepiece(text_file: Path, out_dir: Path, vocab_size: int | None) -> Path:
    """fastai's SentencePiece training (unigram, special tokens as user symbols) -> the model file."""
    from fastai.text.core import SentencePieceTokenizer
    # removes text_file
    model = SentencePieceTokenizer(vocab_sz=vocab_size, cache_dir=out_dir).train(text_file)
    (out_dir / "spm.vocab").unlink(missing_ok=True)  # the model file alone is used
    return Path(model)


def check_lang(lang: str, key: str) -> None:
    """`lang` is a language spaCy's blank pipelines know (as fastai's `SpacyTokenizer(lang=...)` needs)."""
    import spacy
    try:
        spacy.blank(lang)
    except (ImportError, ValueError, KeyError) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UlmfitError(f"{key}: spaCy cannot tokenize language {lang!r} ({why}); use an ISO code spaCy "
                          f"knows (en, de, fr, es, it, nl, pt, ..., or xx for any), or data.tokenizer: "
                          f"sentencepiece") from None


def detokenize(tokens: list[str], subwords: bool) -> str:
    """Readable text: pieces joined at their '▁' marks, then fastai's `decode_spec_tokens`
    (xxmaj, xxup, xxrep, xxwrep), without xxbos and xxpad."""
    from fastai.text.learner import decode_spec_tokens
    if subwords:  # fastai's bare special tokens (xxunk, xxmaj...) stand alone between pieces
        spec = set(SPECIAL_TOKENS)
        tokens = "".join(f"▁{t}▁" if t in spec else t for t in tokens).replace("▁", " ").split()
    return " ".join(w for w in decode_spec_tokens(tokens) if w not in ("xxbos", PAD))


# one per worker process (kept in-process between calls: spaCy and the memo are slow to rebuild)
_tokenizer = None
_tokenizer_for: object = ()  # the (sp_model, lang) `_tokenizer` was made for


def init_worker(sp_model: Path | None = None, lang: str = "en") -> None:
    global _tokenizer, _tokenizer_for
    if _tokenizer is None or _tokenizer_for != (sp_model, lang):
        _tokenizer, _tokenizer_for = make_tokenizer(sp_model, lang), (sp_model, lang)


def tokenize_batch(texts: list[str]) -> list[list[str]]:
    """Tokens of `texts` with the tokenizer `init_worker` made in this process."""
    return list(_tokenizer(texts))


def _batches(texts: list[str]) -> list[tuple[int, int]]:
    """(start, end) ranges of about `_BATCH_CHARS` characters each."""
    ranges, st, size = [], 0, 0
    for i, t in enumerate(texts):
        size += len(t)
        if size >= _BATCH_CHARS:
            ranges.append((st, i + 1))
            st, size = i + 1, 0
    if st < len(texts):
        ranges.append((st, len(texts)))
    return ranges


def tokenize(texts: list[str], workers: int | None = None, desc: str = "tokenizing",
             sp_model: Path | None = None, lang: str = "en", tokenizer=None) -> list[list[str]]:
    """Token lists for `texts`, in order (SentencePiece pieces when `sp_model` is given, else words by
    spaCy's rules for `lang`); in this process, with `tokenizer` when given (one made for the same
    `sp_model` and `lang`), unless the texts are long enough to pay for starting `workers` processes."""
    n = len(texts)
    workers = (os.cpu_count() or 1) if workers is None else workers
    in_process = workers == 0 or sum(map(len, texts)) < _IN_PROCESS_CHARS
    if in_process:
        if tokenizer is None:
            init_worker(sp_model, lang)
            tokenizer = _tokenizer
        if n < _BAR_DOCS:
            return list(tokenizer(texts))
    out: list = [None] * n
    bar = progress(total=n, desc=desc, unit="doc")
    if in_process:
        for st, end in _batches(texts):
            out[st:end] = tokenizer(texts[st:end])
            bar.update(end - st)
    else:
        with ProcessPoolExecutor(workers, initializer=init_worker, initargs=(sp_model, lang)) as ex:
            futs = {ex.submit(tokenize_batch, texts[st:end]): st for st, end in _batches(texts)}
            for fut in as_completed(futs):
                toks = fut.result()
                st = futs[fut]
                out[st:st + len(toks)] = toks
                bar.update(len(toks))
    bar.close()
    return out


def build_vocab(docs: list[list[str]], max_vocab: int, min_freq: int) -> list[str]:
    """fastai's `make_vocab`: special tokens first, most frequent next, padded to a multiple of 8."""
    return make_vocab(Counter(t for d in docs for t in d), min_freq=min_freq, max_vocab=max_vocab)
