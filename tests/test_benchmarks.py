"""The benchmarks keep running, on tiny models (no timing checks). bench/train_speed.py and
bench/predict_speed.py run in tests/test_gpu_check.py's smoke run."""
import subprocess
import sys

import pytest

from conftest import ROOT


def test_lstm_grad_range_bench_prints_its_table():
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "lstm_grad_range.py"), "--device", "cpu", "--emb", "16",
                          "--hid", "32", "--layers", "2", "--vocab", "500", "--bs", "8", "--bptt", "16"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| weights | none (bf16 autocast) |" in res.stdout and "| outputs (dy) | 2^16" in res.stdout, res.stdout


def test_weight_dropout_bench_prints_its_table():
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "weight_dropout_speed.py"), "--device", "cpu",
                          "--emb", "16", "--hid", "32", "--vocab", "300", "--bs", "4", "--bptt", "8", "--steps", "3"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| FlatWeightDropout |" in res.stdout and "speed ratio flat / fastai" in res.stdout, res.stdout


def test_explain_faithfulness_bench_prints_its_tables(chain):
    """bench/explain_faithfulness.py's rows (every method's deletion test and cost) run on the session's tiny
    classifier, quickly; the figures are the benchmark's."""
    pytest.importorskip("captum")
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "explain_faithfulness.py"), "--model",
                          str(chain["clf"]), "--quick"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    for row in ("| ig | 1 |", "| grad_input | 3 |", "| intrinsic | 2 |", "| explain ig |", "| predict (no "):
        assert row in res.stdout, res.stdout


def test_serve_load_bench_prints_its_table(chain, tmp_path):
    """bench/serve_load.py's rows run (servers on 127.0.0.1 with batching on and off, `ulmfit predict`), with a
    small bounded load; the figures are the benchmark's."""
    from ulmfit_cli import api
    bundle = api.export(chain["clf"], tmp_path / "bundle", fmt="onnx")
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "serve_load.py"), "--model", str(bundle),
                          "--clients", "4", "--requests", "5"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    for row in ("| micro-batching on |", "| micro-batching off |", "one request on the idle server",
                "`ulmfit predict` on the 500 questions"):
        assert row in res.stdout, res.stdout
    assert "| 0 | 0 |" in res.stdout  # no errors, exit 0
