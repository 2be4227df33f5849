"""Multi-process training under torchrun with Gloo on the CPU: two real processes per run."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, write_dump, write_easy_csv

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed next to this Python")
LM = ["--set", "train.epochs=2", "--set", "train.checkpoint_every=3"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT)}


def _torchrun(*args, faults: tuple = (), wait: bool = True):
    """Two processes of `ulmfit ARGS`, or with `faults` (options of tests/faults.py) of that script."""
    run = [str(ROOT / "tests" / "faults.py"), *map(str, faults)] if faults else ["-m", "ulmfit_cli"]
    cmd = [str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_port()),
           *run, *map(str, args)]
    if wait:
        return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _single(*args):
    return subprocess.run([sys.executable, "-m", "ulmfit_cli", *map(str, args)], env=_env(), capture_output=True,
                          text=True, timeout=300)


def _running(pid: int) -> bool:
    """`pid` exists and has not exited (a zombie has released everything it held)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _workers(pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes torchrun `pid` started."""
    found = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = dict(kv.split("=", 1) for kv in (p / "environ").read_text().split("\0") if "=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and "RANK" in env:
            found[int(env["RANK"])] = int(p.name)
    return found


def _wait_for(cond, proc, timeout=120):
    end = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else "exited"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    dump = write_dump(tmp / "w-pages-articles.xml.bz2", n_articles=12)
    single = tmp / "single"
    res = _single("pretrain", "-c", TINY, "--set", f"data.source={dump}", *LM, "--run-dir", single)
    assert res.returncode == 0, res.stderr
    return {"tmp": tmp, "dump": dump, "single": single, "csv": write_easy_csv(tmp / "train.csv", 120)}


def test_two_processes_pretrain_and_classify_like_one(data, tmp_path):
    lm = tmp_path / "lm"
    res = _torchrun("pretrain", "-c", TINY, "--set", f"data.source={data['dump']}", *LM, "--run-dir", lm)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm"]  # one run dir, no staging left
    assert not [p for p in lm.rglob("*") if p.name.endswith(".tmp")]
    lines = (lm / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # rank 0 alone logs
    ours, single = (json.loads((d / "results.json").read_text())["valid_loss"] for d in (lm, data["single"]))
    assert abs(ours - single) / single < 0.05  # same global batch (train.bs) as the single process
    assert res.stderr.count("pretrain finished") <= 1 and res.stdout.count("pretrain finished") == 1
    clf = tmp_path / "clf"
    res = _torchrun("train-clf", "-c", TINY, "--set", f"data.train={data['csv']}", "--set", f"init.from_run={lm}",
                    "--set", "train.stages=[{freeze_to: -1}, {freeze_to: 0, epochs: 2}]", "--set", "train.min_steps=null",
                    "--run-dir", clf)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (clf / "model.pth").exists() and len((clf / "metrics.jsonl").read_text().splitlines()) == 3
    assert not list(tmp_path.glob(".*partial"))


def test_each_rank_trains_its_rows_of_the_same_windows():
    from ulmfit_cli.train.loaders import StreamLMLoader
    tokens, offsets = np.arange(2003), np.array([0, 500, 900, 2003])
    loaders = [StreamLMLoader(tokens, 8, 16, torch.device("cpu"), offsets, shuffle=True, seed=3, rows=rows)
               for rows in (slice(None), slice(0, 4), slice(4, 8))]
    for _ in range(2):  # two epochs: the same document order and window edges on every rank
        assert len({len(dl) for dl in loaders}) == 1
        epochs = [list(dl) for dl in loaders]
        assert len({len(e) for e in epochs}) == 1
        for full, r0, r1 in zip(*epochs):
            assert torch.equal(full[0], torch.cat([r0[0], r1[0]])) and torch.equal(full[1], torch.cat([r0[1], r1[1]]))


def test_a_dead_rank_fails_the_run_without_hanging(data, tmp_path):
    proc = _torchrun("pretrain", "-c", TINY, "--set", f"data.source={data['dump']}", *LM, "--run-dir", tmp_path / "lm",
                     faults=("--pause-after-checkpoint", 120), wait=False)
    _wait_for(lambda: (tmp_path / ".lm.partial" / "checkpoints" / "last.pt").exists(), proc)
    workers = _workers(proc.pid)
    assert set(workers) == {0, 1}
    t0 = time.monotonic()
    os.kill(workers[1], signal.SIGKILL)
    rc = proc.wait(timeout=90)
    assert rc != 0 and time.monotonic() - t0 < 90
    assert not (tmp_path / "lm").exists()  # nothing published
    assert (tmp_path / ".lm.partial" / "checkpoints" / "last.pt").exists()  # resumable


def test_a_two_process_run_resumes_in_one_process(data, tmp_path):
    from ulmfit_cli.train.checkpoint_files import read_checkpoint
    proc = _torchrun("pretrain", "-c", TINY, "--set", f"data.source={data['dump']}", *LM, "--run-dir", tmp_path / "lm",
                     faults=("--pause-after-checkpoint", 120), wait=False)
    last = tmp_path / ".lm.partial" / "checkpoints" / "last.pt"
    _wait_for(last.exists, proc)
    workers = list(_workers(proc.pid).values())
    proc.send_signal(signal.SIGKILL)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    end = time.monotonic() + 30  # a killed rank holds the run dir's lock until it has exited
    while any(map(_running, workers)) and time.monotonic() < end:
        time.sleep(0.1)
    ckpt = read_checkpoint(last)
    assert ckpt["batches_done"] == 3 and ckpt["hidden"][0][0].shape[1] == 8  # both ranks' rows were saved
    res = _single("pretrain", "--run-dir", tmp_path / "lm", "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    from ulmfit_cli.train.learners import lm_model
    vocab = json.loads((tmp_path / "lm" / "vocab.json").read_text())
    lm_model(vocab, {"emb_sz": 16, "n_hid": 32, "n_layers": 2},
             torch.load(tmp_path / "lm" / "lm.pth", weights_only=True))  # loads in a single process
    ours, single = (json.loads((d / "results.json").read_text())["valid_loss"] for d in (tmp_path / "lm", data["single"]))
    assert abs(ours - single) / single < 0.05


def test_more_processes_than_gpus_on_a_machine_is_refused_clearly():
    """On one GPU, torchrun --nproc_per_node 2 gave process 1 CUDA's 'invalid device ordinal' (and NCCL refuses
    two ranks on one GPU): the refusal names the process, the GPUs and what to run instead."""
    from ulmfit_cli.errors import UlmfitError
    from ulmfit_cli.train.distributed import gpu_of
    assert gpu_of(0, 1) == 0 and gpu_of(3, 4) == 3
    with pytest.raises(UlmfitError, match=r"process 1 .* \(1 GPU\(s\) here\).*--nproc_per_node 1.*run.device=cpu"):
        gpu_of(1, 1)
