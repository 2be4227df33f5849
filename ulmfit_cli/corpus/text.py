"""Text to token ids without torch or fastai: fastai's special tokens and text rules, ported; the word (spaCy)
and subword (SentencePiece) tokenizers every path shares, from `prepare` to the ONNX runtime; tokenizing many
documents (in batches a progress bar follows, on a process pool when there are enough of them: `prepare`
uses the same worker entry points); numericalization.

The tokens are exactly what fastai's `TextBlock`/`tokenize_df` produce (`xxbos`, `xxmaj`, `xxup`, `xxrep`,
`xxwrep`), so vocabularies stay compatible with fastai's pretrained models.

The rules are fastai's `defaults.text_proc_rules` (fastai/text/core.py, Apache-2.0), copied function for
function: importing fastai.text.core imports torch, which a deployment of an exported model does not have.
A test keeps them equal to fastai's on real text (TREC-6, SST-2, a Wikipedia dump) and on edge cases.
"""
from __future__ import annotations

import html
import os
import re
from collections.abc import Iterator
from itertools import chain
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from ulmfit_cli.console import progress

UNK, PAD, BOS, EOS, FLD, TK_REP, TK_WREP, TK_UP, TK_MAJ = \
    "xxunk xxpad xxbos xxeos xxfld xxrep xxwrep xxup xxmaj".split()
SPECIAL_TOKENS = [UNK, PAD, BOS, EOS, FLD, TK_REP, TK_WREP, TK_UP, TK_MAJ]  # fastai's defaults.text_spec_tok

_re_spec = re.compile(r'([/#\\])')
_re_space = re.compile(' {2,}')
_re_rep = re.compile(r'(\S)(\1{2,})')
_re_wrep = re.compile(r'(?:\s|^)(\w+)\s+((?:\1\s+)+)\1(\s|\W|$)')
_re_all_caps = re.compile(r'(\s|^)([A-Z]+[^a-z\s]*)(?=(\s|$))')
_re_maj = re.compile(r'(\s|^)([A-Z][^A-Z\s]*)(?=(\s|$))')


def fix_html(x: str) -> str:
    x = x.replace('#39;', "'").replace('amp;', '&').replace('#146;', "'").replace('nbsp;', ' ').replace(
        '#36;', '$').replace('\\n', "\n").replace('quot;', "'").replace('<br />', "\n").replace(
        '\\"', '"').replace('<unk>', UNK).replace(' @.@ ', '.').replace(' @-@ ', '-').replace('...', ' …')
    return html.unescape(x)


def replace_rep(t: str) -> str:
    def _replace_rep(m):
        c, cc = m.groups()
        return f' {TK_REP} {len(cc) + 1} {c} '
    return _re_rep.sub(_replace_rep, t)


def replace_wrep(t: str) -> str:
    def _replace_wrep(m):
        c, cc, e = m.groups()
        return f' {TK_WREP} {len(cc.split()) + 2} {c} {e}'
    return _re_wrep.sub(_replace_wrep, t)


def spec_add_spaces(t: str) -> str:
    return _re_spec.sub(r' \1 ', t)


def rm_useless_spaces(t: str) -> str:
    return _re_space.sub(' ', t)


def replace_all_caps(t: str) -> str:
    def _replace_all_caps(m):
        tok = f'{TK_UP} ' if len(m.groups()[1]) > 1 else ''
        return f"{m.groups()[0]}{tok}{m.groups()[1].lower()}"
    return _re_all_caps.sub(_replace_all_caps, t)


def replace_maj(t: str) -> str:
    def _replace_maj(m):
        tok = f'{TK_MAJ} ' if len(m.groups()[1]) > 1 else ''
        return f"{m.groups()[0]}{tok}{m.groups()[1].lower()}"
    return _re_maj.sub(_replace_maj, t)


def lowercase(t: str, add_bos: bool = True, add_eos: bool = False) -> str:
    return (f'{BOS} ' if add_bos else '') + t.lower().strip() + (f' {EOS}' if add_eos else '')


TEXT_RULES = [fix_html, replace_rep, replace_wrep, spec_add_spaces, rm_useless_spaces, replace_all_caps,
              replace_maj, lowercase]  # fastai's defaults.text_proc_rules, in its order


def apply_rules(text: str) -> str:
    for rule in TEXT_RULES:
        text = rule(text)
    return text


_RUNS = re.compile(r"\s+|\S+")  # `\s` is str.isspace(), the test spaCy's tokenizer loop uses
_MEMO_MAX = 1 << 20            # cached runs per process (a few hundred MB at most)


class WordTokenizer:
    """fastai's `TokenizeWithRules(SpacyTokenizer())`: the same rules, spaCy tokenizer and special
    cases, the same output, in plain lists, and several times faster.

    spaCy's tokenizer cuts the text at whitespace and tokenizes each run of non-space characters
    on its own (prefixes, suffixes, infixes, special cases); a run of whitespace becomes a token,
    less the single space that marks the previous token's trailing whitespace. `tokenize` repeats
    that cut (a port of `Tokenizer._tokenize_affixes`) and looks each run up in a memo: most words
    of a corpus repeat. The runs it has not seen go to spaCy together, as one text (`_learn`):
    building a spaCy `Doc` per run is where the time went. Tests compare the output with fastai's
    on real text.
    """

    def __init__(self, lang: str = "en"):
        import spacy
        from spacy.symbols import ORTH
        self.nlp = spacy.blank(lang)
        for w in SPECIAL_TOKENS:
            self.nlp.tokenizer.add_special_case(w, [{ORTH: w}])
        self.nlp.max_length = 10 ** 9  # spaCy's 1M-char guard is for its parser; we only split words
        # the lexical attributes spaCy computes for each new word (its shape, like_num, ...) are for its
        # models, not its tokenizer: half the cost of a word not seen before
        self.nlp.vocab.lex_attr_getters = {}
        # a run as it stands after the text's first run -> its tokens: a whitespace run less the one space
        # that marks the previous token's trailing whitespace (" " alone: no token)
        self.memo: dict[str, list[str]] = {" ": []}
        # runs put in the memo since `take_learnt`, where noted (a list): `prepare`'s workers share them
        self.learnt: list[str] | None = None

    def _spacy(self, text: str) -> list[str]:
        # fastai's one post rule (replace_space): spaces inside a token become '▁'
        return [t.text.replace(" ", "▁") if " " in t.text else t.text for t in self.nlp.tokenizer(text)]

    def _learn(self, runs: set[str]) -> None:
        """Put `runs` (not in the memo) in the memo. The runs of non-space characters are tokenized in one
        call, joined by newlines: spaCy cuts its input at whitespace first, each newline becomes a token of
        its own (where one word's tokens end), and unlike a space it keeps special cases from reaching
        across words."""
        if self.learnt is not None:
            self.learnt.extend(runs)
        words = []
        for run in runs:
            if run[0].isspace():
                body = run[1:] if run[0] == " " else run
                self.memo[run] = self._spacy(body) if body else []
            else:
                words.append(run)
        if not words:
            return
        i, toks = 0, []
        for t in self.nlp.tokenizer("\n".join(words)):
            if t.text == "\n":  # a separator (a word holds no whitespace)
                self.memo[words[i]], i, toks = toks, i + 1, []
            else:
                toks.append(t.text)
        self.memo[words[i]] = toks

    def tokenize(self, text: str) -> list[str]:
        """Tokens of one text after fastai's rules (which begin it with `xxbos`: every other run follows a
        token, as the memo's runs do)."""
        runs = _RUNS.findall(apply_rules(text))
        unseen = set(runs).difference(self.memo)
        if len(self.memo) + len(unseen) > _MEMO_MAX:
            self.memo, unseen = {" ": []}, set(runs)
            if self.learnt is not None:  # what it noted is gone from the memo
                self.learnt = []
        if unseen:
            self._learn(unseen)
        return list(chain.from_iterable(map(self.memo.__getitem__, runs)))

    def __call__(self, texts: list[str]) -> Iterator[list[str]]:
        return map(self.tokenize, texts)

    def take_learnt(self) -> dict[str, list[str]]:
        """The memo's entries learnt since the last call (for another process's `teach`); noting them starts
        with `learnt = []`."""
        learnt, self.learnt = self.learnt, []
        return {run: self.memo[run] for run in learnt}

    def teach(self, entries: dict[str, list[str]]) -> int:
        """Take another tokenizer's memo entries (`take_learnt`), while the memo is under half full (the rest
        is left to what this one reads); returns how many were new here."""
        if len(self.memo) + len(entries) > _MEMO_MAX // 2:
            return 0
        n = len(self.memo)
        self.memo.update(entries)
        return len(self.memo) - n


class SubwordTokenizer:
    """fastai's `TokenizeWithRules(SentencePieceTokenizer(sp_model=...))`, in plain lists. Text by text:
    SentencePiece's batch `Encode` was no faster on SST-2 (about 40k texts/s either way, half of it fastai's
    rules)."""

    def __init__(self, sp_model: Path):
        from sentencepiece import SentencePieceProcessor
        self.sp = SentencePieceProcessor()
        self.sp.Load(str(sp_model))

    def tokenize(self, text: str) -> list[str]:
        return [p.replace(" ", "▁") for p in self.sp.EncodeAsPieces(apply_rules(text))]

    def __call__(self, texts: list[str]) -> Iterator[list[str]]:
        return map(self.tokenize, texts)


def make_tokenizer(sp_model: Path | None = None, lang: str = "en"):
    """The word tokenizer for spaCy language `lang`, or the SentencePiece one when the corpus was prepared
    with a model."""
    return SubwordTokenizer(sp_model) if sp_model else WordTokenizer(lang)


_BATCH_CHARS = 200_000     # text per task sent to a worker
_IN_PROCESS_CHARS = 1_000_000  # below this, starting workers costs more than it saves
_BAR_DOCS = 10_000         # fewer documents take well under a second in one process: no bar


# one per worker process (kept in-process between calls: spaCy and the memo are slow to rebuild)
_tokenizer = None
_tokenizer_for: object = ()  # the (sp_model, lang) `_tokenizer` was made for


def init_worker(sp_model: Path | None = None, lang: str = "en") -> None:
    global _tokenizer, _tokenizer_for
    if _tokenizer is None or _tokenizer_for != (sp_model, lang):
        _tokenizer, _tokenizer_for = make_tokenizer(sp_model, lang), (sp_model, lang)


def worker_tokenizer():
    """The tokenizer `init_worker` made in this process."""
    return _tokenizer


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


def numericalize(docs: list[list[str]], vocab: list[str] | dict[str, int]) -> list[np.ndarray]:
    """Token ids (int64, as fastai's embedding expects); unknown words map to `xxunk`. `vocab` is the list of
    tokens, or its index `{token: id}` (built once by a loaded model: a call per text then costs no
    rebuild)."""
    o2i = vocab if isinstance(vocab, dict) else {w: i for i, w in enumerate(vocab)}
    unk = o2i[UNK]
    return [np.fromiter((o2i.get(t, unk) for t in d), dtype=np.int64, count=len(d)) for d in docs]
