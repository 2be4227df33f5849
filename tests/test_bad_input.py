"""Bad input: each case exits 2 with a message naming the file, key or column, and no traceback."""

import pytest

from conftest import TINY, write_dump


def _pretrain(cli, tmp_path, source, *extra):
    return cli("pretrain", "-c", TINY, "--set", f"data.source={source}", "--run-dir", tmp_path / "run", *extra)


def _assert_clean_failure(res, tmp_path, *needles):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    for n in needles:
        assert str(n) in res.output, (n, res.output)
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".*partial"))


def test_missing_input_file(cli, tmp_path):
    _assert_clean_failure(_pretrain(cli, tmp_path, tmp_path / "nope.xml.bz2"), tmp_path, "data.source", "nope.xml.bz2")


def test_dump_that_is_not_mediawiki(cli, tmp_path):
    f = tmp_path / "page.xml"
    f.write_text("<html><body>hello</body></html>")
    _assert_clean_failure(_pretrain(cli, tmp_path, f), tmp_path, "page.xml", "not a MediaWiki XML export")


def test_truncated_bz2_dump(cli, tmp_path):
    good = write_dump(tmp_path / "good.xml.bz2").read_bytes()
    bad = tmp_path / "cut-pages-articles.xml.bz2"
    bad.write_bytes(good[: len(good) // 2])
    _assert_clean_failure(_pretrain(cli, tmp_path, bad), tmp_path, "cut-pages-articles.xml.bz2")


def test_empty_corpus_and_corpus_too_small(cli, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    _assert_clean_failure(_pretrain(cli, tmp_path, empty), tmp_path, "empty.txt")
    small = tmp_path / "small.txt"
    small.write_text("one short line\nanother short line\nand a third\n")
    _assert_clean_failure(_pretrain(cli, tmp_path, small), tmp_path, "too small for one batch", "train.bs")


def test_non_utf8_text_names_the_byte(cli, tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 3)
    _assert_clean_failure(_pretrain(cli, tmp_path, f), tmp_path, "latin1.txt", "byte offset 3")


@pytest.mark.parametrize("col,key", [("text_col", "data.text_col"), ("label_col", "data.label_col")])
def test_csv_without_the_named_column(cli, tmp_path, easy_csv, col, key):
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={easy_csv}", "--set", f"data.{col}=missing",
              "--run-dir", tmp_path / "run")
    _assert_clean_failure(res, tmp_path, "easy.csv", "'missing'", key, "its columns are: text, label")


def test_single_class_label_column(cli, tmp_path):
    f = tmp_path / "one.csv"
    f.write_text("text,label\nsome words,a\nmore words,a\nother words,a\n")
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={f}", "--run-dir", tmp_path / "run")
    _assert_clean_failure(res, tmp_path, "one.csv", "single class", "'a'")


def test_test_labels_never_seen_in_training(cli, tmp_path, easy_csv):
    f = tmp_path / "test.csv"
    f.write_text("text,label\nsome words,pos\nmore words,maybe\n")
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={easy_csv}", "--set", f"data.test={f}",
              "--run-dir", tmp_path / "run")
    _assert_clean_failure(res, tmp_path, "data.test", "maybe")


def test_from_run_that_is_not_a_run(cli, tmp_path, easy_csv):
    notrun = tmp_path / "notrun"
    notrun.mkdir()
    res = cli("finetune-lm", "-c", TINY, "--set", f"data.train={easy_csv}", "--set", f"init.from_run={notrun}",
              "--run-dir", tmp_path / "run")
    _assert_clean_failure(res, tmp_path, "init.from_run", "not a ulmfit run")


def test_from_run_with_another_architecture(cli, tmp_path, chain, easy_csv):
    lm = chain["lm"]
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={easy_csv}", "--set", f"init.from_run={lm}",
              "--set", "model.n_hid=64", "--run-dir", tmp_path / "run")
    _assert_clean_failure(res, tmp_path, "init.from_run", "model.n_hid", "64", "32")
    res = cli("generate", "--run-dir", tmp_path / "nowhere")
    assert res.exit_code == 2 and "nowhere" in res.output


def test_fasttext_file_without_labels_for_classifier(cli, tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("just text\nmore text\n")
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={f}", "--run-dir", tmp_path / "run")
    _assert_clean_failure(res, tmp_path, "plain.txt", "has no labels")


def test_non_utf8_bytes_can_be_replaced_when_asked(cli, tmp_path, easy_csv):
    f = tmp_path / "mixed.csv"
    f.write_bytes(easy_csv.read_bytes() + "caf\xe9 awful,neg\n".encode("latin-1"))
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={f}", "--set", "train.stages=[{freeze_to: 0}]",
              "--run-dir", tmp_path / "strict")
    assert res.exit_code == 2 and "mixed.csv" in res.output and "byte offset" in res.output
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={f}", "--set", "data.encoding_errors=replace",
              "--set", "train.stages=[{freeze_to: 0}]", "--run-dir", tmp_path / "replaced")
    assert res.exit_code == 0, res.output
    assert "1 undecodable byte sequence(s) replaced" in res.output


def test_empty_documents_are_dropped_and_counted(cli, tmp_path, easy_csv):
    f = tmp_path / "gaps.csv"
    f.write_text(easy_csv.read_text() + '"   ",pos\n"",neg\n', encoding="utf-8")
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={f}", "--set", "train.stages=[{freeze_to: 0}]",
              "--run-dir", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "dropped 2 empty document(s)" in res.output


def test_a_ten_million_character_document_is_truncated_for_the_classifier(cli, tmp_path, easy_csv):
    import resource
    f = tmp_path / "huge.csv"
    f.write_text(easy_csv.read_text() + '"' + "great film " * 1_000_000 + '",pos\n', encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={f}", "--set", "train.stages=[{freeze_to: 0}]",
              "--set", "data.max_chars=20000", "--run-dir", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "1 document(s) longer than data.max_chars=20,000 keep only their last 20,000 characters" in res.output
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500, f"peak memory grew by {grown_mb:.0f} MB for an 11 MB document"
