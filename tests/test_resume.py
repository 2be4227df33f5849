"""Checkpoints and --resume with real `ulmfit` processes killed by SIGKILL, NaN stops, determinism."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY, write_dump, write_easy_csv, write_tasks_csv
from ulmfit_cli.train.checkpoint_files import read_checkpoint

LM_ARGS = ["--set", "train.epochs=2", "--set", "train.checkpoint_every=3"]


def _ulmfit(*args, faults: tuple = (), wait: bool = True):
    """`python -m ulmfit_cli ARGS`, or with `faults` (options of tests/faults.py) that script."""
    run = [str(ROOT / "tests" / "faults.py"), *map(str, faults)] if faults else ["-m", "ulmfit_cli"]
    cmd = [sys.executable, *run, *map(str, args)]
    full_env = {**os.environ, "CI": "true", "PYTHONPATH": str(ROOT)}
    if wait:
        return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (the test hooks keep it paused there)."""
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < end, "timed out waiting for the run"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    return {"tmp": tmp, "dump": write_dump(tmp / "wiki-pages-articles.xml.bz2", n_articles=12),
            "csv": write_easy_csv(tmp / "train.csv", 120)}


@pytest.fixture(scope="module")
def reference(corpus):
    """One uninterrupted pretrain run: what every resumed run must reproduce."""
    out = corpus["tmp"] / "ref"
    res = _ulmfit("pretrain", "-c", TINY, "--set", f"data.source={corpus['dump']}", *LM_ARGS, "--run-dir", out)
    assert res.returncode == 0, res.stderr
    return out


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(corpus, reference, tmp_path):
    run_dir = tmp_path / "lm"
    staging = tmp_path / ".lm.partial"
    proc = _ulmfit("pretrain", "-c", TINY, "--set", f"data.source={corpus['dump']}", *LM_ARGS, "--run-dir", run_dir,
                   faults=("--pause-after-checkpoint", 60), wait=False)
    _kill_when(proc, lambda: (staging / "checkpoints" / "last.pt").exists())
    assert proc.returncode == -signal.SIGKILL and not run_dir.exists()
    ckpt = read_checkpoint(staging / "checkpoints" / "last.pt")
    assert ckpt["step"] == 3 and ckpt["batches_done"] == 3 and ckpt["epoch"] == 0  # mid-epoch

    res = _ulmfit("pretrain", "--run-dir", run_dir, "--resume")  # config.yaml of the killed run
    assert res.returncode == 0, res.stderr
    assert "step 3" in res.stderr and not staging.exists()
    assert _same_weights(reference / "lm.pth", run_dir / "lm.pth")
    strip = lambda p: [{k: v for k, v in json.loads(ln).items() if k not in ("seconds", "tokens_per_s")}  # noqa: E731
                       for ln in p.read_text().splitlines()]
    assert strip(run_dir / "metrics.jsonl") == strip(reference / "metrics.jsonl")
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"last.pt", "best.pt"}


def test_sigkill_while_writing_a_checkpoint_never_damages_the_last_one(corpus, reference, tmp_path):
    run_dir, staging = tmp_path / "lm", tmp_path / ".lm.partial"
    last = staging / "checkpoints" / "last.pt"
    base = ["--set", f"data.source={corpus['dump']}", *LM_ARGS, "--run-dir", run_dir]
    proc = _ulmfit("pretrain", "-c", TINY, *base, faults=("--pause-after-checkpoint", 60), wait=False)
    _kill_when(proc, last.exists)
    writing = lambda: any(p.name.endswith(".tmp") for p in last.parent.iterdir())  # noqa: E731
    for _ in range(2):  # each time: killed half-way through writing the next checkpoint
        before = last.read_bytes()
        proc = _ulmfit("pretrain", "--run-dir", run_dir, "--resume", faults=("--slow-checkpoint", 60),
                       wait=False)
        _kill_when(proc, writing)
        assert last.read_bytes() == before
        read_checkpoint(last)  # loads
    res = _ulmfit("pretrain", "--run-dir", run_dir, "--resume")
    assert res.returncode == 0, res.stderr
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    assert _same_weights(reference / "lm.pth", run_dir / "lm.pth")


def test_resume_finetune_and_classifier_in_a_later_phase(cli, corpus, reference, tmp_path):
    """Multi-phase stages: a checkpoint in the second phase resumes there (in-process runs)."""
    common = {"finetune-lm": ["--set", f"data.train={corpus['csv']}", "--set", f"init.from_run={reference}",
                              "--set", "train.epochs=2", "--set", "train.checkpoint_every=5"],
              "train-clf": ["--set", f"data.train={corpus['csv']}", "--set", f"init.from_run={reference}",
                            "--set", "train.stages=[{freeze_to: -1}, {freeze_to: 0, epochs: 2}]",
                            "--set", "train.checkpoint_every=4"]}
    weights = {"finetune-lm": "lm.pth", "train-clf": "model.pth"}
    for stage, args in common.items():
        ref = tmp_path / f"{stage}-ref"
        assert cli(stage, "-c", TINY, *args, "--run-dir", ref).exit_code == 0
        run_dir = tmp_path / stage
        proc = _ulmfit(stage, "-c", TINY, *args, "--run-dir", run_dir,
                       faults=("--pause-after-checkpoint", 60, "--pause-in-phase", 1),
                       wait=False)
        last = tmp_path / f".{stage}.partial" / "checkpoints" / "last.pt"
        _kill_when(proc, lambda: last.exists() and read_checkpoint(last)["phase"] == 1)
        assert read_checkpoint(last)["batches_done"] > 0, "expected a mid-epoch checkpoint"
        res = cli(stage, "--run-dir", run_dir, "--resume")
        assert res.exit_code == 0, res.output
        assert _same_weights(ref / weights[stage], run_dir / weights[stage]), stage


@pytest.mark.parametrize("task", [["data.label_col=[pos, neg]"], ["data.task=regression", "data.label_col=score"]],
                         ids=["multi-label", "regression"])
def test_resume_multi_label_and_regression_mid_epoch(cli, corpus, reference, tmp_path, task):
    """A multi-label and a regression classifier, killed after a mid-epoch checkpoint of their second phase,
    resume to the uninterrupted run's weights (and thresholds)."""
    data = write_tasks_csv(tmp_path / "tasks.csv", 120)
    args = ["-c", TINY, *(a for s in (f"data.train={data}", f"init.from_run={reference}", *task, "data.baseline=false",
                                      "train.stages=[{freeze_to: -1}, {freeze_to: 0, epochs: 2}]",
                                      "train.checkpoint_every=4") for a in ("--set", s))]
    ref = tmp_path / "ref"
    assert cli("train-clf", *args, "--run-dir", ref).exit_code == 0
    run_dir = tmp_path / "run"
    proc = _ulmfit("train-clf", *args, "--run-dir", run_dir, faults=("--pause-after-checkpoint", 60,
                                                                      "--pause-in-phase", 1), wait=False)
    last = tmp_path / ".run.partial" / "checkpoints" / "last.pt"
    _kill_when(proc, lambda: last.exists() and read_checkpoint(last)["phase"] == 1)
    assert read_checkpoint(last)["batches_done"] > 0, "expected a mid-epoch checkpoint"
    res = cli("train-clf", "--run-dir", run_dir, "--resume")
    assert res.exit_code == 0, res.output
    wa, wb = _weights(ref / "model.pth"), _weights(run_dir / "model.pth")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # bit for bit on the CPU
    names = ["labels.json", "results.json"] + (["thresholds.json"] if len(task) == 1 else [])  # multi-label's
    for name in names:
        assert (ref / name).read_text() == (run_dir / name).read_text(), name


def test_resume_refuses_a_changed_model_or_data_and_missing_checkpoints(cli, corpus, reference, tmp_path):
    res = cli("pretrain", "--run-dir", tmp_path / "nothing", "--resume")
    assert res.exit_code == 2 and "no checkpoint" in res.output
    res = cli("pretrain", "-c", reference / "config.yaml", "--run-dir", reference, "--resume",
              "--set", "model.n_hid=48")
    assert res.exit_code == 2 and "model.n_hid: checkpoint 32, now 48" in res.output
    assert not (reference.parent / f".{reference.name}.partial").exists()  # the finished run alone remains
    # a finished run may go on for more epochs; it stays untouched until the new run finishes
    before = (reference / "lm.pth").read_bytes()
    more = tmp_path / "more"
    import shutil
    shutil.copytree(reference, more)
    res = cli("pretrain", "--run-dir", more, "--resume", "--set", "train.epochs=3")
    assert res.exit_code == 0, res.output
    assert (reference / "lm.pth").read_bytes() == before
    assert len((more / "metrics.jsonl").read_text().splitlines()) == 3


def test_unfinished_run_with_checkpoints_is_not_silently_discarded(cli, corpus, tmp_path):
    run_dir = tmp_path / "lm"
    proc = _ulmfit("pretrain", "-c", TINY, "--set", f"data.source={corpus['dump']}", *LM_ARGS, "--run-dir", run_dir,
                   faults=("--pause-after-checkpoint", 60), wait=False)
    _kill_when(proc, (tmp_path / ".lm.partial" / "checkpoints" / "last.pt").exists)
    res = cli("pretrain", "-c", TINY, "--set", f"data.source={corpus['dump']}", "--run-dir", run_dir)
    assert res.exit_code == 2 and "--resume" in res.output and "--force" in res.output
    assert (tmp_path / ".lm.partial" / "checkpoints" / "last.pt").exists()


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(corpus, tmp_path, capsys):
    import faults  # in-process: the same command with the CLI's error handling, and a NaN at step 7
    run_dir = tmp_path / "lm"
    code = faults.main(["--nan-at-step", "7", "pretrain", "-c", str(TINY), "--set", f"data.source={corpus['dump']}",
                        *LM_ARGS, "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 3 and "NaN or infinite at step 7" in err, err
    ckpt = read_checkpoint(tmp_path / ".lm.partial" / "checkpoints" / "last.pt")
    assert ckpt["step"] == 6 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert not run_dir.exists()


def test_same_seed_same_weights_and_text_different_seed_different(cli, corpus, reference, tmp_path):
    runs = {}
    for name, seed in (("a", 42), ("b", 42), ("c", 7)):
        res = cli("pretrain", "-c", TINY, "--set", f"data.source={corpus['dump']}", "--set", f"run.seed={seed}",
                  "--run-dir", tmp_path / name)
        assert res.exit_code == 0, res.output
        text = cli("generate", "--run-dir", tmp_path / name, "--prompt", "the", "--seed", "0", "--n-words", "12")
        runs[name] = (_weights(tmp_path / name / "lm.pth"), text.output)
    same = lambda x, y: all(torch.equal(x[k], y[k]) for k in x)  # noqa: E731
    assert same(runs["a"][0], runs["b"][0]) and runs["a"][1] == runs["b"][1]
    assert not same(runs["a"][0], runs["c"][0])


def test_resume_at_a_phase_end_and_with_fastais_optimizer(cli, corpus, reference, tmp_path):
    """A checkpoint at the end of finetune-lm's frozen phase (the next phase starts from its loader and
    random state), a mid-epoch checkpoint of fastai's own optimizer (its state holds fastcore `L`s), and
    one in the second epoch of fastai's LMDataLoader."""
    cases = {"phase-end": ("finetune-lm", ["--set", f"data.train={corpus['csv']}", "--set", f"init.from_run={reference}",
                                           "--set", "train.frozen_epochs=1", "--set", "train.epochs=1"], "lm.pth",
                           lambda ck: ck["phase"] == 0 and ck["batches_done"] == 0),
             "fastai-opt": ("pretrain", ["--set", f"data.source={corpus['dump']}", *LM_ARGS,
                                         "--set", "train.optimizer=fastai"], "lm.pth",
                            lambda ck: ck["batches_done"] > 0),
             # fastai's LMDataLoader permutes its document order in place each epoch: the order is loader state
             "fastai-loader": ("finetune-lm", ["--set", f"data.train={corpus['csv']}", "--set", f"init.from_run={reference}",
                                               *LM_ARGS, "--set", "train.loader=fastai"], "lm.pth",
                               lambda ck: ck["phase"] == 1 and ck["epoch"] == 1 and ck["batches_done"] > 0)}
    for name, (stage, args, weights, expected) in cases.items():
        ref = tmp_path / f"{name}-ref"
        assert cli(stage, "-c", TINY, *args, "--run-dir", ref).exit_code == 0
        run_dir = tmp_path / name
        proc = _ulmfit(stage, "-c", TINY, *args, "--run-dir", run_dir, wait=False,
                       faults=("--pause-after-checkpoint", 60, *(("--pause-in-phase", 1, "--pause-from-epoch", 1)
                                                                  if name == "fastai-loader" else ())))
        last = tmp_path / f".{name}.partial" / "checkpoints" / "last.pt"
        _kill_when(proc, lambda: last.exists() and expected(read_checkpoint(last)))
        res = cli(stage, "--run-dir", run_dir, "--resume")
        assert res.exit_code == 0, res.output
        assert _same_weights(ref / weights, run_dir / weights), name
