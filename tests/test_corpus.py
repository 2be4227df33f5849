"""Reading corpora: dump extraction, tables and fastText files, and fastai-compatible tokens."""

from pathlib import Path

import pandas as pd
import pytest

from conftest import SHARED_DATA, write_dump
from ulmfit_cli.corpus.tables import iter_text_documents, read_texts
from ulmfit_cli.classify.task import SINGLE_LABEL
from conftest import articles
from ulmfit_cli.corpus.wikidump import DumpStats
from ulmfit_cli.errors import UlmfitError


@pytest.mark.parametrize("name", ["d-pages-articles.xml.bz2", "d-pages-articles.xml"])
def test_dump_keeps_articles_and_strips_markup(tmp_path, name):
    stats = DumpStats()
    docs = articles(write_dump(tmp_path / name, n_articles=3), stats)
    assert len(docs) == 3 and stats.pages == 5
    assert stats.skipped["redirect"] == 1 and stats.skipped["namespace"] == 1
    text = "\n".join(docs)
    assert "Article 0 is a topic of" in text
    for markup in ("{{", "[[", "<ref", "A source", "'''", "<!--", "hidden note", "cellA", "TEMPLATEBODY",
                   "Category:", "Infobox"):
        assert markup not in text, markup


def test_wikitext_files_split_into_articles(tmp_path):
    body = " = Alpha = \n\n some text @-@ here \n\n = = Part = = \n\n more \n = Beta = \n\n beta text \n"
    (tmp_path / "wiki.train.tokens").write_text(body)
    docs = list(iter_text_documents(tmp_path / "wiki.train.tokens", "data.source"))
    assert docs == ["Alpha\nsome text @-@ here\n= = Part = =\nmore", "Beta\nbeta text"]


def test_fasttext_tsv_and_lines(tmp_path):
    ft = tmp_path / "reviews.cor"
    ft.write_text("__label__pos a fine film\n\n__label__neg dull and long\n")
    df = read_texts(ft, "data.train", label_col="label", task=SINGLE_LABEL)
    assert df.to_dict("records") == [{"text": "a fine film", "label": "pos"}, {"text": "dull and long", "label": "neg"}]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("sentence\ty\nhello there\t1\n\t0\nbye\t0\n")
    df = read_texts(tsv, "data.train", text_col="sentence", label_col="y", task=SINGLE_LABEL)
    assert df["text"].tolist() == ["hello there", "bye"] and df.attrs["dropped_empty"] == 1
    lines = tmp_path / "docs.txt"
    lines.write_text("first doc\n\nsecond doc\n")
    assert read_texts(lines, "data.train")["text"].tolist() == ["first doc", "second doc"]
    assert list(iter_text_documents(lines, "data.source")) == ["first doc", "second doc"]


def test_tokens_match_fastai_tokenize1():
    from fastai.text.core import SpacyTokenizer, tokenize1

    from ulmfit_cli.corpus.text import tokenize
    texts = ["The QUICK brown fox!!!! jumps over the lazy dog dog dog dog.", "Hello <br /> world &amp; co."]
    ours = tokenize(texts, workers=0)
    assert ours == [list(tokenize1(t, SpacyTokenizer())) for t in texts]
    assert ours[0][0] == "xxbos" and "xxup" in ours[0] and "xxrep" in ours[0] and "xxwrep" in ours[0]


def test_parallel_tokenization_matches_in_process(monkeypatch):
    from ulmfit_cli.corpus import text as tk
    monkeypatch.setattr(tk, "_IN_PROCESS_CHARS", 0)
    monkeypatch.setattr(tk, "_BATCH_CHARS", 50)
    texts = [f"Document number {i} talks about Rivers and CITIES." for i in range(40)]
    assert tk.tokenize(texts, workers=2) == tk.tokenize(texts, workers=0)


def test_missing_label_in_fasttext_file_is_named(tmp_path):
    ft = tmp_path / "r.cor"
    ft.write_text("__label__pos fine\nno label here\n")
    with pytest.raises(UlmfitError, match="document 2 has no __label__"):
        read_texts(ft, "data.train", label_col="label", task=SINGLE_LABEL)


@pytest.mark.skipif(not (SHARED_DATA / "wiki").is_dir(), reason="../shared/data is absent (a fresh clone)")
def test_real_dump_sample_extracts_clean_articles():
    stats = DumpStats()
    docs = articles(SHARED_DATA / "wiki" / "enwiki-pages-articles-sample.xml.bz2", stats)
    assert stats.pages == 206 and len(docs) > 80 and stats.skipped["redirect"] > 50
    assert docs[0].startswith("Anarchism is a political philosophy")
    assert not any("{{" in d or "[[" in d or "<ref" in d for d in docs)


EDGE_CASES = ["", "   ", "ALL CAPS HERE and Sentence Case", "aaaaah!!!! no no no no way", "a/b#c\\d  e",
              "&amp; &quot;x&quot; #39;s <br /> <unk> 3 @.@ 5 @-@ 6...", "Ünïcode Ärger ÉTÉ çà", "tab\tand\nline",
              "word word word word, The The The end", "x" * 50 + " I A B"]


def _real_texts() -> list[str]:
    """The project's TREC-6 questions (always here) and, where ../shared/data is, SST-2 and a Wikipedia dump."""
    texts = pd.read_csv(Path(__file__).resolve().parents[1] / "data/trec6/train.csv")["text"].tolist()[:1500]
    shared = SHARED_DATA
    if (shared / "sst2/train.csv").is_file():
        texts += pd.read_csv(shared / "sst2/train.csv")["text"].tolist()[:1500]
    if (shared / "wiki/enwiki-pages-articles-sample.xml.bz2").is_file():
        import bz2
        with bz2.open(shared / "wiki/enwiki-pages-articles-sample.xml.bz2", "rt", encoding="utf-8") as f:
            texts += [f.read(400_000)[i:i + 2000] for i in range(0, 400_000, 2000)]  # raw markup: hostile text
    return texts


def test_ported_rules_and_tokenizer_match_fastai_on_real_text():
    """corpus.text runs without torch: its copy of fastai's rules, and the word tokenizer built on it, must
    give fastai's tokenize1 output token for token."""
    from fastai.text.core import SpacyTokenizer, defaults, tokenize1

    from ulmfit_cli.corpus import text
    assert text.SPECIAL_TOKENS == defaults.text_spec_tok
    assert [f.__name__ for f in text.TEXT_RULES] == [f.__name__ for f in defaults.text_proc_rules]
    texts = EDGE_CASES + _real_texts()
    for t in texts:
        ported = t
        for ours, theirs in zip(text.TEXT_RULES, defaults.text_proc_rules):
            t, ported = theirs(t), ours(ported)
            assert ported == t, (ours.__name__, t)
    spacy_tok, ours = SpacyTokenizer(), text.WordTokenizer("en")
    assert list(ours(texts)) == [list(tokenize1(t, spacy_tok)) for t in texts]


def test_word_tokenizer_is_the_same_when_its_memo_is_small(monkeypatch):
    """A memo that fills up is emptied and the text's words learnt again: the tokens stay the same, as they
    do whether a word was learnt alone or in a batch with others (`WordTokenizer._learn`)."""
    from ulmfit_cli.corpus import text
    texts = EDGE_CASES + _real_texts()[:400]
    expected = list(text.WordTokenizer("en")(texts))
    one_by_one = text.WordTokenizer("en")
    assert [one_by_one.tokenize(t) for t in texts[::-1]][::-1] == expected  # other batches, other order
    monkeypatch.setattr(text, "_MEMO_MAX", 40)
    small = text.WordTokenizer("en")
    assert list(small(texts)) == expected
    assert len(small.memo) <= max(40, max(len(set(text._RUNS.findall(text.apply_rules(t)))) for t in texts) + 1)


def test_ported_make_vocab_matches_fastai():
    from collections import Counter

    from fastai.text.data import make_vocab as fastai_make_vocab

    from ulmfit_cli.corpus.text import WordTokenizer
    from ulmfit_cli.corpus.tokenize import make_vocab
    count = Counter(t for doc in WordTokenizer("en")(_real_texts()[:600]) for t in doc)
    for min_freq, max_vocab in ((3, 60000), (1, 60000), (2, 100), (5, 13), (1, 16), (1, len(count) + 9)):
        assert make_vocab(count, min_freq, max_vocab) == fastai_make_vocab(count, min_freq, max_vocab)


def test_subword_tokenizer_matches_fastai(tmp_path):
    from fastai.text.core import SentencePieceTokenizer, tokenize1

    from ulmfit_cli.corpus.text import SubwordTokenizer
    from ulmfit_cli.corpus.tokenize import train_sentencepiece
    corpus = tmp_path / "text.txt"
    texts = _real_texts()[:1500] + EDGE_CASES
    corpus.write_text("\n".join(t.replace("\n", " ") for t in texts[:1000]), encoding="utf-8")
    model = train_sentencepiece(corpus, tmp_path / "sp", 400)
    ours = SubwordTokenizer(model)
    fastai_sp = SentencePieceTokenizer(sp_model=model)
    assert list(ours(texts)) == [list(tokenize1(t, fastai_sp)) for t in texts]
