"""Hostile but realistic use: two commands on one run dir, outputs aimed at inputs, odd stdin, SIGTERM,
values that pydantic would bend. Each case: a clear message, the right exit code, inputs unchanged."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CLF_STAGES, ROOT, TINY, write_dump

ENV = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT)}


def _python(*args, stdin: bytes | None = None, env: dict | None = None, wait: bool = True):
    cmd = [sys.executable, *map(str, args)]
    if wait:
        return subprocess.run(cmd, env=env or ENV, input=stdin, capture_output=True, timeout=300)
    return subprocess.Popen(cmd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _clean(res, *needles, code: int = 2) -> str:
    out = res.output if hasattr(res, "output") else (res.stdout + res.stderr).decode()
    got = res.exit_code if hasattr(res, "exit_code") else res.returncode
    assert got == code, (got, out)
    assert "Traceback" not in out, out
    for n in needles:
        assert str(n) in out, (n, out)
    return out


def _wait_for(ready, proc, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


# ---------------------------------------------------------------- one run dir, two processes
def _clf_args(chain, run_dir: Path, seed: int, epochs: int):
    return ("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={chain['ft']}",
            "--set", f"run.seed={seed}", "--set", f"train.stages=[{{freeze_to: 0, epochs: {epochs}, lr: 0.02}}]",
            "--run-dir", run_dir)


def test_a_second_run_on_the_same_run_dir_is_refused_and_the_first_publishes_alone(chain, tmp_path):
    run_dir, hold = tmp_path / "clf", tmp_path / "hold"
    hold.touch()
    first = _python(ROOT / "tests" / "faults.py", "--hold-while", hold, *_clf_args(chain, run_dir, 1, 2), wait=False)
    _wait_for(lambda: (tmp_path / ".clf.partial" / "checkpoints" / "last.pt").exists(), first)
    second = _python("-m", "ulmfit_cli", *_clf_args(chain, run_dir, 2, 3), "--force", wait=False)
    again = _python("-m", "ulmfit_cli", *_clf_args(chain, run_dir, 2, 3), "--resume", wait=False)
    for proc in (second, again):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2 and "Traceback" not in err.decode(), err.decode()
        assert f"run dir {run_dir} is in use by another ulmfit process (PID {first.pid})" in err.decode()
    hold.unlink()
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()
    assert "seed: 1\n" in (run_dir / "config.yaml").read_text()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]  # the first run's epochs alone
    assert not (tmp_path / ".clf.partial").exists() and not (tmp_path / ".clf.lock").exists()


def test_the_lock_names_its_holder_waits_when_asked_and_dies_with_it(tmp_path):
    from ulmfit_cli.errors import UlmfitError
    from ulmfit_cli.files import exclusive
    target = tmp_path / "store"
    holder = _python("-c", f"""
import sys, time
from pathlib import Path
from ulmfit_cli.files import exclusive
with exclusive(Path({str(target)!r}), "token store"):
    print("held", flush=True)
    time.sleep(60)
""", wait=False)
    assert holder.stdout.readline().strip() == b"held"
    with pytest.raises(UlmfitError, match=f"token store is in use by another ulmfit process \\(PID {holder.pid}\\)"):
        with exclusive(target, "token store"):
            pass
    holder.send_signal(signal.SIGKILL)  # the kernel drops a dead holder's lock: nothing stale
    holder.wait(timeout=30)
    with exclusive(target, "token store", wait=True):
        assert (tmp_path / ".store.lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".store.lock").exists()


def test_run_dir_that_is_the_upstream_run_is_refused_even_with_force(cli, chain, tmp_path):
    import shutil
    lm = tmp_path / "lm"
    shutil.copytree(chain["ft"], lm)
    before = _digest(lm)
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={lm}",
              "--run-dir", lm, "--force")
    _clean(res, "is init.from_run", "not even with --force")
    assert _digest(lm) == before and not (tmp_path / ".lm.partial").exists()


def test_a_run_dir_whose_parent_cannot_be_made(cli, chain, tmp_path):
    (tmp_path / "afile").write_text("x")
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={chain['ft']}",
              "--run-dir", tmp_path / "afile" / "clf")
    _clean(res, "cannot write in", "afile")


# ---------------------------------------------------------------- outputs never clobber inputs
def test_predict_and_evaluate_never_write_over_their_input_or_model(cli, chain, tmp_path):
    import shutil
    data = tmp_path / "test.csv"
    shutil.copyfile(chain["test"], data)
    before, model = data.read_bytes(), _digest(chain["clf"])
    _clean(cli("predict", "--model", chain["clf"], "--input", data, "--output", data), "is the --input file")
    _clean(cli("evaluate", "--model", chain["clf"], "--input", data, "--output", data), "is the --input file")
    _clean(cli("predict", "--model", chain["clf"], "--input", data, "--output", chain["clf"] / "model.pth"),
           "inside --model")
    _clean(cli("evaluate", "--model", chain["clf"], "--input", data, "--output", chain["clf"]), "is --model")
    _clean(cli("predict", "--model", chain["clf"], "--input", data, "--output", tmp_path), "is a folder")
    assert data.read_bytes() == before and _digest(chain["clf"]) == model
    res = cli("predict", "--model", chain["clf"], "--input", data, "--output", tmp_path / "new" / "deep" / "p.csv")
    assert res.exit_code == 0 and (tmp_path / "new" / "deep" / "p.csv").is_file()


# ---------------------------------------------------------------- standard input
def _predict_stdin(cli_bytes, chain, stdin: bytes, *extra):
    return cli_bytes(stdin, "predict", "--model", chain["clf"], "--input", "-", "--output", "-", *extra)


@pytest.fixture
def cli_bytes():
    """The CLI in this process with `stdin` as the bytes on standard input."""
    from typer.testing import CliRunner

    from ulmfit_cli.cli import app
    runner = CliRunner()
    return lambda stdin, *args: runner.invoke(app, [str(a) for a in args], input=stdin, catch_exceptions=False)


def test_stdin_with_a_csv_header_is_read_as_csv_and_says_so(cli_bytes, chain):
    res = _predict_stdin(cli_bytes, chain, b"label,text\npos,a great wonderful film\nneg,an awful boring film\n")
    assert res.exit_code == 0, res.output
    assert "reading standard input as CSV (from its first line" in res.stderr
    rows = res.stdout.splitlines()
    assert rows[0].startswith("label,text,prediction,prob_") and len(rows) == 3
    forced = _predict_stdin(cli_bytes, chain, b"label,text\npos,a great film\n", "--input-format", "lines")
    assert forced.exit_code == 0 and "as one text per line (as asked)" in forced.stderr
    assert len(forced.stdout.splitlines()) == 3  # header line and row, each a text


def test_stdin_jsonl_and_plain_lines(cli_bytes, chain):
    res = _predict_stdin(cli_bytes, chain, b'{"text": "a great film", "id": 7}\n{"text": "awful", "id": 8}\n')
    assert res.exit_code == 0 and "as JSON Lines" in res.stderr
    assert res.stdout.splitlines()[0].startswith("text,id,prediction")
    res = _predict_stdin(cli_bytes, chain, b"a great film\nan awful one\n")
    assert res.exit_code == 0 and "as one text per line" in res.stderr and len(res.stdout.splitlines()) == 3


def test_binary_bytes_on_stdin(cli_bytes, chain):
    _clean(_predict_stdin(cli_bytes, chain, b"fine line\n\xff\xfe\x00\x81 binary\n"), "standard input",
           "not utf-8 text", "byte offset 10", "line 2", "--encoding")


# ---------------------------------------------------------------- configs that pydantic would bend
@pytest.mark.parametrize("value,needle", [("1", "greater than or equal to 2"), ("true", "not true")])
def test_classifier_batch_size_one_or_a_boolean(cli, chain, tmp_path, value, needle):
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={chain['ft']}",
              "--set", f"train.bs={value}", "--run-dir", tmp_path / "clf")
    _clean(res, "train.bs", needle, f"--set train.bs={value}")
    assert not list(tmp_path.glob(".clf*")) and not (tmp_path / "clf").exists()


@pytest.mark.parametrize("item,key", [("train.foo.bar=1", "train.foo"), ("zzz.y=1", "zzz")])
def test_an_unknown_key_is_blamed_on_its_set(cli, tmp_path, item, key):
    res = cli("train-clf", "-c", "configs/trec6/train-clf.yaml", "--set", item, "--print-config")
    _clean(res, f"{key}: unknown key", f"[from --set {item}]")


def test_generate_refuses_a_request_that_would_run_for_hours(cli, chain):
    _clean(cli("generate", "--run-dir", chain["lm"], "--n-words", 10_000_000), "--n-words", "10,000")


# ---------------------------------------------------------------- a CPU that never looks hung
def test_threads_are_set_and_progress_lines_are_printed_off_a_terminal(cli, chain, tmp_path, monkeypatch):
    import torch
    monkeypatch.setenv("ULMFIT_PROGRESS_SECONDS", "0")
    threads = torch.get_num_threads()
    try:
        res = cli(*_clf_args(chain, tmp_path / "clf", 1, 1), "--set", "run.threads=1")
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    assert "cpu: 1 PyTorch threads" in res.output
    assert "[train-clf] epoch 1/1  step 1/" in res.output and "tokens/s  epoch ETA" in res.output


def test_sigterm_says_what_was_kept_and_how_to_resume(chain, tmp_path):
    run_dir = tmp_path / "clf"
    proc = _python(ROOT / "tests" / "faults.py", "--pause-after-checkpoint", 60, *_clf_args(chain, run_dir, 1, 3),
                   wait=False)
    _wait_for(lambda: (tmp_path / ".clf.partial" / "checkpoints" / "last.pt").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "terminated by SIGTERM" in err and "resume it with --resume" in err
    assert not run_dir.exists() and (tmp_path / ".clf.partial" / "checkpoints" / "last.pt").is_file()


# ---------------------------------------------------------------- smaller
def test_a_class_left_out_of_training_is_named(cli, chain, tmp_path):
    import pandas as pd

    from ulmfit_cli.corpus.tables import read_texts

    from ulmfit_cli.classify.task import SINGLE_LABEL
    from ulmfit_cli.classify.splits import split_off as _split
    df = pd.read_csv(chain["train"])
    f = tmp_path / "rare.csv"
    pd.concat([df, pd.DataFrame([{"text": "a lonely rare sentence", "label": "rare"}])]).to_csv(f, index=False)
    texts = read_texts(f, "data.train", label_col="label", task=SINGLE_LABEL)
    seed = next(s for s in range(100) if "rare" not in set(_split(texts, 0.25, s, stratify=True)[0]["label"]))
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={f}", "--set", f"init.from_run={chain['ft']}",
              "--set", "train.stages=[{freeze_to: 0, epochs: 1}]", "--set", "data.valid_pct=0.25",
              "--set", f"run.seed={seed}", "--run-dir", tmp_path / "clf")
    assert res.exit_code == 0, res.output
    assert "class(es) 'rare' have too few rows to be in both splits" in res.output


@pytest.mark.parametrize("content,needles", [
    ("text,text\nhello,world\n", ["column 'text' more than once", "columns 1, 2"]),
    ("text\tlabel\nhello there\tpos\nthe, and, more\tneg\n", ["a TSV file? name it .tsv"]),
])
def test_table_headers_that_mislead(cli, chain, tmp_path, content, needles):
    f = tmp_path / "in.csv"
    f.write_text(content)
    _clean(cli("predict", "--model", chain["clf"], "--input", f, "--output", tmp_path / "p.csv"), "in.csv", *needles)


def test_bytes_named_bz2_that_are_not_bzip2(cli, tmp_path):
    f = tmp_path / "fake-pages-articles.xml.bz2"
    f.write_bytes(os.urandom(2000).replace(b"B", b"C"))
    _clean(cli("pretrain", "-c", TINY, "--set", f"data.source={f}", "--run-dir", tmp_path / "run"),
           "fake-pages-articles.xml.bz2", "not a bzip2 file")


def test_a_truncated_model_file_is_called_damaged(cli, chain, tmp_path):
    bundle = tmp_path / "bundle"
    assert cli("export", "--model", chain["clf"], "--output", bundle).exit_code == 0
    weights = bundle / "model.pth"
    weights.write_bytes(weights.read_bytes()[:5000])
    _clean(cli("predict", "--model", bundle, "--input", chain["test"], "--output", tmp_path / "p.csv"),
           "model.pth", "damaged or truncated")


def test_sentencepiece_on_too_little_text(cli, tmp_path):
    import bz2
    dump = write_dump(tmp_path / "one-pages-articles.xml.bz2", n_articles=1)
    german = bz2.decompress(dump.read_bytes()).replace(b'xml:lang="en"', b'xml:lang="de"', 1)
    dump.write_bytes(bz2.compress(german))  # a German dump: the spaCy 'en' warning would be printed for spaCy
    res = cli("pretrain", "-c", TINY, "--set", f"data.source={dump}", "--set", "data.tokenizer=sentencepiece",
              "--run-dir", tmp_path / "run")
    out = _clean(res, "SentencePiece could not be trained", "one-pages-articles.xml.bz2")
    assert "spaCy 'en'" not in out


def test_help_shows_one_line_per_command(cli):
    out = cli("--help").output
    assert "Pretrain an AWD-LSTM language model" in out and "Classify texts." in out
    assert "WikiText-103" not in out and "discriminative" not in out  # the rest is under `ulmfit COMMAND --help`
    assert "WikiText-103" in cli("pretrain", "--help").output
