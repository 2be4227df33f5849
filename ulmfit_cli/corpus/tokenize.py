"""What training adds to `corpus.text`'s tokenizers: SentencePiece training, the vocab (fastai's
`make_vocab`, copied), the check that spaCy knows a language, and readable text from tokens (`generate`).
"""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ulmfit_cli.corpus.text import PAD, SPECIAL_TOKENS, init_worker
from ulmfit_cli.errors import UlmfitError


SP_SENTENCES = 1_000_000  # lines SentencePiece's trainer keeps of its input: a random sample
SP_BYTE_FALLBACK = 1_000  # vocab sizes from which the 256 byte pieces fit: unseen characters become bytes


def train_sentencepiece(text_file: Path, out_dir: Path, vocab_size: int | None,
                        sentences: int = SP_SENTENCES) -> Path:
    """fastai's SentencePiece training (`SentencePieceTokenizer.train`: unigram, its character coverage,
    special tokens as user symbols, its vocab-size rule of thumb) with what a Wikipedia-size corpus needs,
    which fastai's call does not pass: the trainer keeps at most `sentences` lines (input_sentence_size:
    its memory stays flat however large the input) and falls back to bytes for unseen characters
    (byte_fallback, where the vocab has room) -> the model file. Removes `text_file`.

    The lines kept are the first ones (shuffle_input_sentence=false): the trainer's own shuffle cannot be
    seeded (sentencepiece 0.2.x gives another model on every run, `set_random_generator_seed` or not),
    and `prepare` writes its sample already spread over the corpus."""
    from fastai.text.core import SentencePieceTokenizer
    from sentencepiece import SentencePieceTrainer
    fastai = SentencePieceTokenizer(vocab_sz=vocab_size, cache_dir=out_dir)
    vocab = fastai._get_vocab_sz(text_file) if vocab_size is None else vocab_size
    specials = ["\u2581" + t for t in fastai.special_toks]
    args = (
        f"--input={text_file} --vocab_size={vocab} --model_prefix={out_dir / 'spm'} "
        f"--character_coverage={fastai.char_coverage} --model_type={fastai.model_type} "
        f"--unk_id={len(specials)} --pad_id=-1 --bos_id=-1 --eos_id=-1 --minloglevel=2 "
        f"--user_defined_symbols={','.join(specials)} --hard_vocab_limit=false "
        f"--input_sentence_size={sentences} --shuffle_input_sentence=false "
        f"--byte_fallback={'true' if vocab >= SP_BYTE_FALLBACK else 'false'}")
    # in a process of its own: the trainer's memory (its whole sample) goes back to the system when it ends,
    # rather than staying in `prepare`'s parent, from which the tokenizing workers then fork
    with ProcessPoolExecutor(1) as ex:
        ex.submit(SentencePieceTrainer.Train, args).result()
    text_file.unlink()
    (out_dir / "spm.vocab").unlink(missing_ok=True)  # the model file alone is used
    return out_dir / "spm.model"


def check_lang(lang: str, key: str) -> None:
    """`lang` is a language spaCy's blank pipelines know (as fastai's `SpacyTokenizer(lang=...)` needs). The
    check builds this process's word tokenizer for `lang` (`text.init_worker`), which the tokenizing that
    follows uses (and forked workers inherit) rather than building spaCy's pipeline again (~0.5 s)."""
    try:
        init_worker(None, lang)
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


def make_vocab(count: Counter, min_freq: int = 3, max_vocab: int = 60000) -> list[str]:
    """fastai's `make_vocab` (fastai/text/data.py, Apache-2.0), copied: importing fastai imports torch, which
    `ulmfit prepare` runs without (seconds of its start-up). The special tokens first, then the most frequent
    seen at least `min_freq` times, up to `max_vocab`, padded with `xxfake` to a multiple of 8 (by 8 when it
    is one already, as fastai's does). A test keeps it equal to fastai's."""
    vocab = [o for o, c in count.most_common(max_vocab) if c >= min_freq]
    for o in reversed(SPECIAL_TOKENS):  # every special token in the vocab, first
        if o in vocab:
            vocab.remove(o)
        vocab.insert(0, o)
    vocab = vocab[:max_vocab]
    return vocab + ["xxfake"] * (8 - len(vocab) % 8)


def build_vocab(docs: list[list[str]], max_vocab: int, min_freq: int) -> list[str]:
    """fastai's `make_vocab`: special tokens first, most frequent next, padded to a multiple of 8."""
    return make_vocab(Counter(t for d in docs for t in d), min_freq=min_freq, max_vocab=max_vocab)
