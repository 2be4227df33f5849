"""`ulmfit prepare` and the token store: streaming extraction, caching, interruption, memmap loading."""
import bz2
import json
import os

import numpy as np
import pytest
import torch

from conftest import TINY, articles, write_dump
from ulmfit_cli.config import PretrainData
from ulmfit_cli.corpus import prepare as prep
from ulmfit_cli.corpus import wikidump
from ulmfit_cli.corpus.store import COMPLETE, TokenStore
from ulmfit_cli.corpus.text import numericalize, tokenize
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.layout import SP_MODEL


def _data(tmp_path, source, **kw) -> PretrainData:
    return PretrainData(source=str(source), cache_dir=str(tmp_path / "cache"), workers=0, min_freq=1, **kw)


def _all_tokens(store: TokenStore) -> list[list[str]]:
    docs = []
    for split in ("train", "valid"):
        toks, offs = store.tokens(split), store.offsets(split)
        docs += [[store.vocab[i] for i in toks[a:b]] for a, b in zip(offs[:-1], offs[1:])]
    return docs


def test_store_holds_fastai_tokens_of_every_article(tmp_path):
    dump = write_dump(tmp_path / "w-pages-articles.xml.bz2", n_articles=10)
    store = prep.prepare(_data(tmp_path, dump), seed=0)
    assert (store.path / COMPLETE).is_file() and store.stats["articles"] == 10
    assert store.stats["skipped"]["redirect"] == 1 and store.stats["skipped"]["namespace"] == 1
    assert store.stats["valid_docs"] == 1 and store.stats["train_docs"] == 9
    assert store.tokens("train").dtype == np.uint16 and isinstance(store.tokens("train"), np.memmap)
    expected = tokenize(articles(dump), workers=0)
    assert sorted(map(tuple, _all_tokens(store))) == sorted(map(tuple, expected))


def test_neither_workers_nor_the_dumps_layout_change_the_store(tmp_path, monkeypatch):
    """The same pages as one bz2 stream, as plain XML, and in Wikimedia's multistream layout read by its
    index or by finding the streams, with 0, 1 or 2 workers and pieces of a few pages: the same store (and
    the folder where 2 workers share the words they learnt is gone from it)."""
    monkeypatch.setattr(wikidump, "XML_BYTES", 3000)  # many small pieces, out-of-order completion
    monkeypatch.setattr(wikidump, "CHUNK_BYTES", 1500)
    single = write_dump(tmp_path / "w-pages-articles.xml.bz2", n_articles=30)
    xml = bz2.decompress(single.read_bytes())
    plain = tmp_path / "plain" / "w-pages-articles.xml"
    plain.parent.mkdir()
    plain.write_bytes(xml)
    multi = tmp_path / "multi" / "w-pages-articles-multistream.xml.bz2"
    multi.parent.mkdir()
    index = wikidump.to_multistream(xml, multi, pages_per_stream=3)
    assert index.name == "w-pages-articles-multistream-index.txt.bz2"
    indexed, found = wikidump.stream_starts(multi, index), wikidump.stream_starts(multi)
    assert len(indexed) > 10 and found == indexed + [found[-1]]  # the closing tag's stream has no page
    bare = tmp_path / "bare" / multi.name  # the same file without its index
    bare.parent.mkdir()
    bare.write_bytes(multi.read_bytes())
    stores = [prep.prepare(_data(tmp_path / f"{i}-{w}", src).model_copy(update={"workers": w}), seed=3)
              for i, src in enumerate((single, plain, multi, bare)) for w in (0, 1, 2)]
    first = stores[0]
    assert first.stats["articles"] == 30 and first.stats["pages"] == 32
    assert all(s.stats["words_shared_between_workers"] == 0 for s in stores[0::3] + stores[1::3])
    assert not [p for s in stores for p in s.path.iterdir() if p.is_dir()]
    for other in stores[1:]:
        assert other.vocab == first.vocab
        assert {k: other.stats[k] for k in ("pages", "articles", "skipped")} == \
            {k: first.stats[k] for k in ("pages", "articles", "skipped")}
        for split in ("train", "valid"):
            assert np.array_equal(other.tokens(split), first.tokens(split))
            assert np.array_equal(other.offsets(split), first.offsets(split))


def test_a_folder_of_multistream_parts_is_read_without_its_index_files(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    for part in (1, 2):
        xml = bz2.decompress(write_dump(tmp_path / f"p{part}.xml.bz2", n_articles=8, seed=part).read_bytes())
        wikidump.to_multistream(xml, folder / f"xxwiki-20260101-pages-articles-multistream{part}.xml-p{part}.bz2",
                                pages_per_stream=2)
    assert len(list(folder.glob("*index*"))) == 2 and prep.input_files(folder) == sorted(folder.glob("*xml-p*"))
    store = prep.prepare(_data(tmp_path, folder).model_copy(update={"workers": 2}), seed=0)
    assert store.stats["articles"] == 16


def test_a_multistream_dump_cut_between_streams_is_called_truncated(tmp_path):
    xml = bz2.decompress(write_dump(tmp_path / "w.xml.bz2", n_articles=12).read_bytes())
    multi = tmp_path / "w-pages-articles-multistream.xml.bz2"
    wikidump.to_multistream(xml, multi, pages_per_stream=3)
    starts = wikidump.stream_starts(multi)
    multi.write_bytes(multi.read_bytes()[:starts[3]])  # whole streams, the rest and the closing tag gone
    with pytest.raises(UlmfitError, match="truncated .its last stream ends without </mediawiki>"):
        prep.prepare(_data(tmp_path, multi), seed=0)


def test_second_prepare_reuses_the_cache_and_a_change_rebuilds(tmp_path):
    dump = write_dump(tmp_path / "w-pages-articles.xml.bz2")
    first = prep.prepare(_data(tmp_path, dump), seed=0)
    stamp = (first.path / COMPLETE).stat().st_mtime_ns
    again = prep.prepare(_data(tmp_path, dump), seed=0)
    assert again.path == first.path and (again.path / COMPLETE).stat().st_mtime_ns == stamp
    other = prep.prepare(_data(tmp_path, dump, max_vocab=40), seed=0)
    assert other.path != first.path and len(other.vocab) <= 48


def test_interrupted_prepare_leaves_no_finished_store(tmp_path, monkeypatch):
    dump = write_dump(tmp_path / "w-pages-articles.xml.bz2")
    calls = {"n": 0}
    real = prep._work

    def dies(*a):
        calls["n"] += 1
        raise KeyboardInterrupt
    monkeypatch.setattr(prep, "_work", dies)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(_data(tmp_path, dump), seed=0)
    cache = tmp_path / "cache"
    assert calls["n"] == 1 and not any((p / COMPLETE).exists() for p in cache.iterdir())
    monkeypatch.setattr(prep, "_work", real)
    store = prep.prepare(_data(tmp_path, dump), seed=0)  # starts again cleanly
    assert (store.path / COMPLETE).is_file() and not list(cache.glob("*.partial"))


def _multistream(xml: bytes, pages_per_stream: int) -> bytes:
    """bz2 streams of a few pages each, as Wikipedia's multistream dumps are made."""
    cuts = [0] + [m for m in range(len(xml)) if xml.startswith(b"<page>", m)][::pages_per_stream][1:] + [len(xml)]
    return b"".join(bz2.compress(xml[a:b]) for a, b in zip(cuts[:-1], cuts[1:]))


def test_corrupt_bz2_is_named_and_builds_nothing_unless_asked(tmp_path):
    streams = _multistream(write_dump(tmp_path / "good.xml", n_articles=40).read_bytes(), 10)
    bad = tmp_path / "cut-pages-articles.xml.bz2"
    bad.write_bytes(streams[: int(len(streams) * 0.6)])
    with pytest.raises(UlmfitError, match="cut-pages-articles.xml.bz2.*truncated or corrupted"):
        prep.prepare(_data(tmp_path, bad), seed=0)
    assert not list((tmp_path / "cache").glob("*/" + COMPLETE))
    store = prep.prepare(_data(tmp_path, bad, keep_truncated=True), seed=0)
    assert store.stats["truncated_input"] and 0 < store.stats["articles"] < 40


def test_wikitext_folder_keeps_its_split(tmp_path):
    (tmp_path / "wiki.train.tokens").write_text(" = A = \n\n alpha words here \n = B = \n\n beta words \n")
    (tmp_path / "wiki.valid.tokens").write_text(" = C = \n\n gamma words \n")
    store = prep.prepare(_data(tmp_path, tmp_path), seed=0)
    assert store.stats["train_docs"] == 2 and store.stats["valid_docs"] == 1


@pytest.mark.parametrize("piece_tokens", [1 << 20, 300])
def test_memmap_loader_covers_every_token_once_per_epoch(tmp_path, piece_tokens):
    from collections import Counter

    from ulmfit_cli.train.loaders import fastai_lm_dls
    dump = write_dump(tmp_path / "w-pages-articles.xml.bz2", n_articles=10)
    store = prep.prepare(_data(tmp_path, dump), seed=0)
    bs, bptt = 4, 16
    dls = fastai_lm_dls(store.split("train"), store.split("valid"), store.vocab, bs, bptt, torch.device("cpu"),
                        piece_tokens=piece_tokens)
    assert dls.vocab == store.vocab
    stream = np.asarray(store.tokens("train"), dtype=np.int64)
    n = (len(stream) - 1) // bs
    orders = []
    for _ in range(2):  # each epoch: every token at most once, all but the < bs left over
        rows = [[] for _ in range(bs)]
        for x, y in dls.train:
            assert x.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1])
            for r in range(bs):
                rows[r] += x[r].tolist()
        seen = Counter(t for row in rows for t in row)
        assert all(len(row) == n for row in rows)
        assert not seen - Counter(stream.tolist()) and sum((Counter(stream.tolist()) - seen).values()) <= bs
        orders.append(rows)
    if piece_tokens < len(stream):  # pieces are shuffled each epoch
        assert orders[0] != orders[1]
    else:  # one piece: the rows are the stream itself, in order
        assert rows[0] == stream[:n].tolist()


def test_pretrain_from_store_matches_in_memory_tokens(cli, tmp_path):
    dump = write_dump(tmp_path / "w-pages-articles.xml.bz2", n_articles=12)
    res = cli("prepare", "-c", TINY, "--set", f"data.source={dump}", "--set", f"data.cache_dir={tmp_path / 'c'}")
    assert res.exit_code == 0, res.output
    assert "token store" in res.output or "token store" in (res.stderr if hasattr(res, "stderr") else "")
    res = cli("pretrain", "-c", TINY, "--set", f"data.source={dump}", "--set", f"data.cache_dir={tmp_path / 'c'}",
              "--run-dir", tmp_path / "lm")
    assert res.exit_code == 0, res.output
    vocab = json.loads((tmp_path / "lm" / "vocab.json").read_text())
    store = TokenStore.open(next((tmp_path / "c").iterdir()))
    assert vocab == store.vocab
    docs = tokenize(articles(dump), workers=0)
    ids = numericalize(docs, vocab)
    assert sum(map(len, ids)) == store.stats["train_tokens"] + store.stats["valid_tokens"]


def test_non_english_dump_warns(tmp_path, capsys):
    dump = write_dump(tmp_path / "de-pages-articles.xml", n_articles=3)
    dump.write_text(dump.read_text().replace('xml:lang="en"', 'xml:lang="de"'))
    prep.prepare(_data(tmp_path, dump), seed=0)
    assert "xml:lang=\"de\"" in capsys.readouterr().err


def test_multistream_bz2(tmp_path):
    multi = tmp_path / "m-pages-articles-multistream.xml.bz2"
    multi.write_bytes(_multistream(write_dump(tmp_path / "x.xml", n_articles=4).read_bytes(), 2))
    store = prep.prepare(_data(tmp_path, multi), seed=0)
    assert store.stats["articles"] == 4


def test_memmap_and_in_memory_loaders_reach_the_same_validation_loss(tmp_path):
    from fastai.torch_core import set_seed

    from ulmfit_cli.config import LMTrain
    from ulmfit_cli.train.learners import lm_learner
    from ulmfit_cli.train.loaders import as_split, fastai_lm_dls
    from ulmfit_cli.runs import Run
    store = prep.prepare(_data(tmp_path, write_dump(tmp_path / "w-pages-articles.xml.bz2", n_articles=16)), seed=0)
    docs = {s: [np.asarray(store.tokens(s)[a:b], dtype=np.int64)
                for a, b in zip(store.offsets(s)[:-1], store.offsets(s)[1:])] for s in ("train", "valid")}
    train = LMTrain(bs=8, bptt=16, epochs=2, lr=1e-2)
    arch = {"emb_sz": 16, "n_hid": 32, "n_layers": 2}
    cpu = torch.device("cpu")
    losses = []
    in_memory = lambda: fastai_lm_dls(as_split(docs["train"]), as_split(docs["valid"]), store.vocab, 8, 16, cpu)  # noqa: E731
    memmap = lambda pieces: fastai_lm_dls(store.split("train"), store.split("valid"), store.vocab, 8, 16, cpu,  # noqa: E731
                                          piece_tokens=pieces)
    for make in (in_memory, lambda: memmap(500)):
        set_seed(0, reproducible=True)
        learn = lm_learner(make(), arch, 0.2, train, "fp32", Run(tmp_path), "test")
        learn.fit_one_cycle(2, 1e-2)
        with learn.no_bar():
            losses.append(float(learn.validate()[0]))
    # the validation windows are the same tokens in the same order
    a, b = (list(d.valid) for d in (in_memory(), memmap(1 << 20)))
    assert len(a) == len(b) and all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert losses[1] == pytest.approx(losses[0], rel=0.02)


def test_sentencepiece_runs_through_the_whole_pipeline(cli, tmp_path, easy_csv):
    dump = write_dump(tmp_path / "w-pages-articles.xml.bz2", n_articles=12)
    lm, ft, clf = tmp_path / "lm", tmp_path / "ft", tmp_path / "clf"
    res = cli("pretrain", "-c", TINY, "--set", f"data.source={dump}", "--set", "data.tokenizer=sentencepiece",
              "--set", "data.sp_vocab_size=120", "--run-dir", lm)
    assert res.exit_code == 0, res.output
    vocab = json.loads((lm / "vocab.json").read_text())
    assert (lm / "tokenizer.model").is_file() and any(t.startswith("▁") for t in vocab)
    assert "▁xxbos" in vocab or "xxbos" in vocab
    res = cli("finetune-lm", "-c", TINY, "--set", f"data.train={easy_csv}", "--set", f"init.from_run={lm}",
              "--run-dir", ft)
    assert res.exit_code == 0, res.output
    assert (ft / "tokenizer.model").is_file()
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={easy_csv}", "--set", f"init.from_run={ft}",
              "--set", "train.stages=[{freeze_to: 0, epochs: 1}]", "--run-dir", clf)
    assert res.exit_code == 0, res.output
    res = cli("generate", "--run-dir", ft, "--prompt", "The history", "--n-words", "8", "--seed", "0")
    # the fine-tuning texts are lower case, so 'xxmaj' is unknown to this vocab: the prompt reads 'the history'
    assert res.exit_code == 0 and res.output.lower().startswith("xxunk the history"), res.output
    assert "▁" not in res.output and "xxbos" not in res.output


def test_folder_of_dump_parts(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    write_dump(parts / "enwiki-pages-articles1.xml-p1p10.bz2", n_articles=3, seed=1)
    write_dump(parts / "enwiki-pages-articles2.xml-p11p20.bz2", n_articles=4, seed=2)
    store = prep.prepare(_data(tmp_path, parts), seed=0)
    assert store.stats["articles"] == 7 and store.stats["pages"] == 11


@pytest.mark.parametrize("random_bptt", [False, True])
def test_stream_loader_windows_cover_the_stream_once_per_epoch(random_bptt):
    from ulmfit_cli.train.loaders import stream_lm_dls
    tokens = np.arange(1003)  # every token is its own position: documents and order are easy to recover
    offsets = np.array([0, 100, 130, 400, 401, 700, 1003])
    bs, bptt = 4, 16
    dls = stream_lm_dls(tokens, tokens[:200], ["xxunk", "xxpad"], bs, bptt, torch.device("cpu"),
                        random_bptt=random_bptt, train_offsets=offsets)
    n = (len(tokens) - 1) // bs
    edges, orders = [], []
    for _ in range(3):
        rows, starts, pos = [[] for _ in range(bs)], [], 0
        expected = len(dls.train)  # fastai reads len() before it iterates
        for x, y in dls.train:
            assert x.dtype == torch.int64 and x.shape[1] <= (bptt + 30 if random_bptt else bptt)
            assert torch.equal(x[:, 1:], y[:, :-1])
            starts.append(pos)
            pos += x.shape[1]
            for r in range(bs):
                rows[r] += x[r].tolist()
        assert len(starts) == expected and all(len(row) == n for row in rows)
        stream = [t for row in rows for t in row]  # the epoch's stream, rows tiling it in order
        assert len(set(stream)) == len(stream) == n * bs  # nothing repeated; only the < bs tail left out
        jumps = [(a, b) for a, b in zip(stream, stream[1:]) if b != a + 1]
        assert all(a + 1 in offsets and b in offsets for a, b in jumps)  # documents stay whole
        edges.append(tuple(starts))
        orders.append(tuple(b for _, b in jumps))
    assert len(set(edges)) > 1  # window edges move between epochs
    assert len(set(orders)) > 1  # and documents come in a new order
    assert [x.shape[1] for x, _ in dls.valid][0] == bptt  # validation: fixed windows from 0
    assert [t for x, _ in dls.valid for t in x[0].tolist()] == list(range((200 - 1) // bs))


def test_pretrain_and_finetune_with_the_stock_fastai_loader_and_optimizer(cli, tmp_path, dump, easy_csv):
    stock = ["--set", "train.loader=fastai", "--set", "train.optimizer=fastai"]
    lm = tmp_path / "lm"
    res = cli("pretrain", "-c", TINY, "--set", f"data.source={dump}", *stock, "--run-dir", lm)
    assert res.exit_code == 0, res.output
    res = cli("finetune-lm", "-c", TINY, "--set", f"data.train={easy_csv}", "--set", f"init.from_run={lm}",
              "--set", "train.random_bptt=true", "--run-dir", tmp_path / "ft")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ft" / "results.json").read_text())["valid_loss"] > 0


def test_prepare_says_the_input_size_and_projects_its_time(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prep, "PROJECT_AFTER_S", 0.0)  # "after a minute", at once
    monkeypatch.setattr(wikidump, "CHUNK_BYTES", 1000)
    dump = tmp_path / "w-pages-articles-multistream.xml.bz2"
    wikidump.to_multistream(bz2.decompress(write_dump(tmp_path / "w.xml.bz2", n_articles=30).read_bytes()), dump,
                            pages_per_stream=3)
    prep.prepare(_data(tmp_path, dump), seed=0)
    err = capsys.readouterr().err
    assert f"reading {dump.stat().st_size / 1e6:,.1f} MB in 1 file(s)" in err
    assert "min in all" in err and "min left" in err


def test_sentencepiece_samples_its_input_and_falls_back_to_bytes_for_unseen_characters(tmp_path):
    import sentencepiece as spm

    from conftest import cyrillic_sentences
    from ulmfit_cli.corpus import tokenize as tok
    text = tmp_path / "sample.txt"
    lines = "".join(s + "\n" for group in cyrillic_sentences().values() for s in group) * 6  # 216 lines
    models = []
    for sentences in (101, 101, 216):
        text.write_text(lines, encoding="utf-8")
        model = tok.train_sentencepiece(text, tmp_path / str(len(models)), 1000, sentences=sentences)
        models.append(_pieces(model))
    assert models[0] == models[1] != models[2]  # a part of the input, the same part every time
    pieces = spm.SentencePieceProcessor(model_file=str(model)).encode("Москва 字", out_type=str)
    assert pieces[-3:] == ["<0xE5>", "<0xAD>", "<0x97>"] and not text.exists()  # 字 as its UTF-8 bytes


def _pieces(model) -> list[tuple[str, float]]:
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(model))
    return [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]


def test_sentencepiece_store_is_the_same_for_any_number_of_workers(tmp_path, monkeypatch):
    """The sample SentencePiece trains on is read by the workers from pieces spread over a multistream dump,
    then drawn with the run's seed: the same model and tokens whatever the number of workers."""
    monkeypatch.setattr(wikidump, "CHUNK_BYTES", 1500)  # a piece a stream of 3 pages
    dump = tmp_path / "w-pages-articles-multistream.xml.bz2"
    wikidump.to_multistream(bz2.decompress(write_dump(tmp_path / "w.xml.bz2", n_articles=30).read_bytes()), dump,
                            pages_per_stream=3)
    stores = [prep.prepare(_data(tmp_path / str(w), dump, tokenizer="sentencepiece", sp_vocab_size=120,
                                 sp_train_chars=2000).model_copy(update={"workers": w}), seed=1) for w in (0, 2)]
    first, other = stores
    sample = first.stats["sentencepiece_sample"]
    assert sample["chars"] >= 2000 and sample["lines"] < 15  # a paragraph an article: half the 30 at most
    assert _pieces(first.path / SP_MODEL) == _pieces(other.path / SP_MODEL)
    assert other.vocab == first.vocab
    for split in ("train", "valid"):
        assert np.array_equal(other.tokens(split), first.tokens(split))


def test_a_store_built_elsewhere_is_a_source_as_it_is(cli, tmp_path):
    """`prepare` on one machine, `pretrain` on another: the store folder as data.source, with no corpus, no
    cache and no tokenizer run; settings that would give its ids another meaning are refused."""
    import shutil
    dump = write_dump(tmp_path / "w-pages-articles.xml.bz2", n_articles=10)
    built = prep.prepare(_data(tmp_path, dump), seed=0)
    carried = tmp_path / "carried-store"
    shutil.copytree(built.path, carried)
    dump.unlink()
    store = prep.prepare(_data(tmp_path / "elsewhere", carried), seed=5)
    assert store.path == carried and store.vocab == built.vocab
    assert np.array_equal(store.tokens("train"), built.tokens("train"))
    assert not (tmp_path / "elsewhere" / "cache").exists()
    with pytest.raises(UlmfitError, match=r"data.max_vocab: 60000 there, 100 here"):
        prep.prepare(_data(tmp_path, carried, max_vocab=100), seed=0)
    res = cli("pretrain", "-c", TINY, "--set", f"data.source={carried}", "--set", "data.min_freq=1",
              "--run-dir", tmp_path / "lm")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "lm" / "vocab.json").read_text()) == built.vocab


def test_the_prepare_command_imports_no_training_stack(tmp_path, dump):
    """`ulmfit prepare` reads and tokenizes without torch, fastai, scikit-learn or pandas (their imports were
    most of its start-up); with 2 workers, as it runs by default, the store is the one built in this process."""
    import subprocess
    import sys
    code = ("import runpy, sys\n"
            "sys.argv = ['ulmfit', 'prepare', '--set', sys.argv[1], '--set', sys.argv[2], '--set', 'data.workers=2',"
            " '--set', 'data.min_freq=1', '--set', 'run.seed=0']\n"
            "try:\n    runpy.run_module('ulmfit_cli', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('imported:', sorted(m for m in ('torch', 'fastai', 'sklearn', 'pandas', 'thinc') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code, f"data.source={dump}", f"data.cache_dir={tmp_path / 'c'}"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "CI": "true"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "imported: ['thinc']" in out.stdout  # spaCy's thinc, told there is no torch
    built = TokenStore.open(next((tmp_path / "c").iterdir()))
    here = prep.prepare(_data(tmp_path, dump), seed=0)
    assert _all_tokens(built) == _all_tokens(here) and built.vocab == here.vocab
    assert built.stats["workers_cpu_seconds"] > 0 and built.stats["parent_cpu_seconds"] > 0  # where time went
    assert here.stats["workers_cpu_seconds"] == 0  # workers=0: no worker process


def test_prepare_builds_spacy_pipeline_once_and_not_on_a_cache_hit(tmp_path, dump, monkeypatch):
    """Checking data.lang builds the tokenizer the build then uses (spaCy's pipeline is ~0.5 s of start-up);
    a store in the cache was built with a valid language: no pipeline at all."""
    import spacy
    from ulmfit_cli.corpus import text
    built = []
    blank = spacy.blank
    monkeypatch.setattr(spacy, "blank", lambda *a, **kw: built.append(a) or blank(*a, **kw))
    monkeypatch.setattr(text, "_tokenizer", None)
    prep.prepare(_data(tmp_path, dump), seed=0)
    assert built == [("en",)]
    monkeypatch.setattr(text, "_tokenizer", None)
    prep.prepare(_data(tmp_path, dump), seed=0)
    assert built == [("en",)]


def test_a_worker_takes_the_words_another_learnt_and_tokenizes_the_same(tmp_path, dump, monkeypatch):
    """Worker processes share what their word tokenizers learnt (through files): a second worker that reads
    the texts a first one read asks spaCy about none of their words, and encodes them as the first did."""
    from concurrent.futures import ProcessPoolExecutor
    from ulmfit_cli.corpus import text
    monkeypatch.setattr(text, "_tokenizer", None)  # forked workers start with an empty memo
    texts = articles(dump)
    folder = tmp_path / "words"
    folder.mkdir()
    results = []
    for _ in range(2):  # one worker after the other: the second finds the first's file
        with ProcessPoolExecutor(1, initializer=prep._init_worker, initargs=(None, "en", folder)) as ex:
            results.append(ex.submit(prep._work, "text", texts, 0).result())
    first, second = results
    learnt = list(folder.iterdir())
    assert len(learnt) == 1 and learnt[0].stat().st_size > 0  # the second learnt nothing to pass on
    assert first[5] == 0 and second[5] > len(set(" ".join(texts).split())) // 2  # runs taken from the first
    assert second[2] == first[2] and np.array_equal(second[1], first[1]) and np.array_equal(second[0], first[0])
    alone = tokenize(texts, workers=0)
    assert [[second[2][i] for i in ids] for ids in np.split(second[1], np.cumsum(second[0])[:-1])] == alone
