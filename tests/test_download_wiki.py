"""`ulmfit download-wiki` against a real HTTP server on 127.0.0.1 (tests/wiki_server.py, its own process)
serving a dumps folder laid out as dumps.wikimedia.org: a Russian export in the multistream layout with its
index and sha1sums.txt. A transfer cut halfway and resumed with Range, a run stopped mid-file and resumed by
the next, a checksum mismatch refused with nothing published, an unknown language, no network; then the
downloaded non-Latin dump carried through prepare (SentencePiece, and spaCy's `ru` rules), pretrain,
finetune-lm, train-clf and predict."""
from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY, cyrillic_sentences, write_cyrillic_export
from ulmfit_cli.corpus.wikidump import to_multistream
from ulmfit_cli.errors import UlmfitError

HERE = Path(__file__).parent
DATE, UNFINISHED = "20260101", "20260201"
DUMP = f"ruwiki-{DATE}-pages-articles-multistream.xml.bz2"
INDEX = f"ruwiki-{DATE}-pages-articles-multistream-index.txt.bz2"


def _site(root: Path, bad_sum: bool = False) -> dict:
    """ruwiki/<DATE>/ (finished: dump, index, sha1sums.txt) and ruwiki/<UNFINISHED>/ (its checksum file lists
    no multistream file yet)."""
    done = root / "ruwiki" / DATE
    done.mkdir(parents=True)
    xml = write_cyrillic_export(root / "export.xml")
    (root / "export.xml").unlink()
    to_multistream(xml, done / DUMP, pages_per_stream=4)
    sums = {n: hashlib.sha1((done / n).read_bytes()).hexdigest() for n in (DUMP, INDEX)}
    if bad_sum:
        sums[DUMP] = "0" * 40
    (done / f"ruwiki-{DATE}-sha1sums.txt").write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    later = root / "ruwiki" / UNFINISHED
    later.mkdir()
    (later / f"ruwiki-{UNFINISHED}-sha1sums.txt").write_text(f"{'1' * 40}  ruwiki-{UNFINISHED}-stub.xml.gz\n")
    return {"dump": done / DUMP, "index": done / INDEX}


@contextmanager
def serving(root: Path, *extra: str):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = root.parent / f"{root.name}.log"
    proc = subprocess.Popen([sys.executable, str(HERE / "wiki_server.py"), str(root), str(port), str(log), *extra])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url, log
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_cut_transfer_resumes_with_range_and_latest_is_the_newest_finished_dump(tmp_path):
    from ulmfit_cli import api
    site = _site(tmp_path / "site")
    with serving(tmp_path / "site", "--cut", DUMP) as (url, log):
        got = api.download_wiki("ru", output=tmp_path / "out", mirror=url)
    assert got == tmp_path / "out" / DUMP and got.read_bytes() == site["dump"].read_bytes()
    assert (tmp_path / "out" / INDEX).read_bytes() == site["index"].read_bytes()
    assert not list((tmp_path / "out").glob(".*part"))
    lines = log.read_text().splitlines()
    gets = [ln for ln in lines if ln.startswith(f"GET /ruwiki/{DATE}/{DUMP}")]
    assert gets[0].endswith("range=None") and gets[1].endswith(f"range=bytes={site['dump'].stat().st_size // 2}-")


def test_a_run_stopped_mid_file_is_resumed_by_the_next(tmp_path):
    from ulmfit_cli import api
    site = _site(tmp_path / "site")
    out = tmp_path / "out"
    with serving(tmp_path / "site", "--cut", DUMP) as (url, log):
        with pytest.raises(UlmfitError, match="broke off.*run the same command again to resume"):
            api.download_wiki("ru", DATE, out, mirror=url, retries=0)
        part = out / f".{DUMP}.part"
        assert part.stat().st_size == site["dump"].stat().st_size // 2 and not (out / DUMP).exists()
        api.download_wiki("ru", DATE, out, mirror=url, retries=0)
    assert (out / DUMP).read_bytes() == site["dump"].read_bytes() and not part.exists()
    assert f"range=bytes={site['dump'].stat().st_size // 2}-" in log.read_text()


def test_a_checksum_mismatch_is_refused_with_nothing_published(cli, tmp_path):
    _site(tmp_path / "site", bad_sum=True)
    with serving(tmp_path / "site") as (url, _):
        r = cli("download-wiki", "ru", "--mirror", url, "--output", tmp_path / "out")
    assert r.exit_code == 2 and "checksum mismatch" in r.output and DUMP in r.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # neither the dump nor its part


def test_an_unknown_language_and_no_network_exit_2_naming_the_url_and_folder(cli, tmp_path):
    _site(tmp_path / "site")
    with serving(tmp_path / "site") as (url, _):
        r = cli("download-wiki", "xx", "--mirror", url, "--output", tmp_path / "out")
    assert r.exit_code == 2 and f"{url}/xxwiki/" in r.output and "HTTP 404" in r.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once closed
    r = cli("download-wiki", "ru", "--mirror", f"http://127.0.0.1:{closed}", "--output", tmp_path / "out")
    assert r.exit_code == 2 and "cannot reach" in r.output and str(tmp_path / "out") in r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tokenizer", ["sentencepiece", "spacy"])
def test_a_downloaded_russian_dump_goes_through_pretraining_to_predictions(cli, tmp_path, tokenizer):
    """Real Cyrillic text, read by every core from the multistream dump, tokenized by SentencePiece or by
    spaCy's Russian rules (data.lang: ru), through the whole recipe: a classifier of the sentences'
    language (Russian, Ukrainian, Serbian) that predicts."""
    from ulmfit_cli import api
    _site(tmp_path / "site")
    with serving(tmp_path / "site") as (url, _):
        dump = api.download_wiki("ru", output=tmp_path / "wiki", mirror=url)
    tok = ["data.tokenizer=sentencepiece"] if tokenizer == "sentencepiece" else ["data.lang=ru"]
    cache = [f"data.cache_dir={tmp_path / 'cache'}", "data.workers=2"]
    api.train("pretrain", [TINY], [f"data.source={dump}", "train.epochs=2", *tok, *cache],
                   run_dir=tmp_path / "lm")
    store = next((tmp_path / "cache").glob("*/stats.json")).read_text()
    assert '"articles": 36' in store and ('"sentencepiece_sample"' in store) == (tokenizer == "sentencepiece")
    rows = [{"text": s, "label": lang} for lang, group in cyrillic_sentences().items() for s in group]
    pd.DataFrame(rows).to_csv(tmp_path / "lang.csv", index=False)
    api.train("finetune-lm", [TINY], [f"data.train={tmp_path / 'lang.csv'}", f"init.from_run={tmp_path / 'lm'}",
                                      "train.epochs=1"], run_dir=tmp_path / "ft")
    api.train("train-clf", [TINY], [f"data.train={tmp_path / 'lang.csv'}", f"init.from_run={tmp_path / 'ft'}",
                                    "data.valid_pct=0.3", "model.blend=false",
                                    "train.stages=[{freeze_to: 0, epochs: 2, lr: 0.02}]"], run_dir=tmp_path / "clf")
    r = cli("predict", "-m", tmp_path / "clf", "-i", tmp_path / "lang.csv", "-o", tmp_path / "p.csv")
    assert r.exit_code == 0, r.output
    preds = pd.read_csv(tmp_path / "p.csv")
    assert len(preds) == len(rows) and set(preds["prediction"]) <= {"ru", "uk", "sr"}
