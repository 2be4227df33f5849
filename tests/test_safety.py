"""Files a user may hand us never run code: weights, vocab, checkpoints and init.from_run contents.

Each fixture file is a pickle whose `__reduce__` would create a sentinel file when unpickled;
every command must exit non-zero with a message, and the sentinel must never appear.
"""
import pickle
import shutil

import pytest
import torch

from conftest import TINY


class _Evil:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (str(self.sentinel), "w"))


@pytest.fixture
def runs(chain, tmp_path_factory):
    """The session's finished LM, fine-tuned LM and classifier runs (each with checkpoints); `tmp` for outputs."""
    return {"tmp": tmp_path_factory.mktemp("safety"), "csv": chain["train"], "lm": chain["lm"], "ft": chain["ft"],
            "clf": chain["clf"]}


def _poison(path, sentinel, as_torch: bool = True):
    if as_torch:
        torch.save({"weight": _Evil(sentinel)}, path)
    else:
        path.write_bytes(pickle.dumps(_Evil(sentinel)))


CASES = {
    # name: (run to copy, file to poison, torch.save or raw pickle, command builder)
    "generate: lm.pth": ("lm", "lm.pth", True, lambda d, r: ["generate", "--run-dir", d]),
    "generate: vocab.json": ("lm", "vocab.json", False, lambda d, r: ["generate", "--run-dir", d]),
    "finetune-lm: init.from_run lm.pth": ("lm", "lm.pth", True, lambda d, r: [
        "finetune-lm", "-c", TINY, "--set", f"data.train={r['csv']}", "--set", f"init.from_run={d}",
        "--run-dir", r["tmp"] / "out"]),
    "finetune-lm: init.from_run vocab.json": ("lm", "vocab.json", False, lambda d, r: [
        "finetune-lm", "-c", TINY, "--set", f"data.train={r['csv']}", "--set", f"init.from_run={d}",
        "--run-dir", r["tmp"] / "out"]),
    "train-clf: init.from_run encoder.pth": ("ft", "encoder.pth", True, lambda d, r: [
        "train-clf", "-c", TINY, "--set", f"data.train={r['csv']}", "--set", f"init.from_run={d}",
        "--run-dir", r["tmp"] / "out"]),
    "predict: model.pth": ("clf", "model.pth", True, lambda d, r: [
        "predict", "--model", d, "--input", r["csv"], "--output", r["tmp"] / "p.csv"]),
    "evaluate: labels.json": ("clf", "labels.json", False, lambda d, r: [
        "evaluate", "--model", d, "--input", r["csv"], "--output", r["tmp"] / "ev"]),
    "export: model.pth": ("clf", "model.pth", True, lambda d, r: [
        "export", "--model", d, "--output", r["tmp"] / "bundle"]),
    "pretrain --resume: checkpoint": ("lm", "checkpoints/last.pt", True, lambda d, r: [
        "pretrain", "--run-dir", d, "--resume"]),
    "finetune-lm --resume: checkpoint": ("ft", "checkpoints/last.pt", True, lambda d, r: [
        "finetune-lm", "--run-dir", d, "--resume"]),
    "train-clf --resume: checkpoint": ("clf", "checkpoints/last.pt", True, lambda d, r: [
        "train-clf", "--run-dir", d, "--resume"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_pickle_that_would_run_code_is_refused(cli, runs, tmp_path, case):
    source, name, as_torch, command = CASES[case]
    run_dir = tmp_path / "run"
    shutil.copytree(runs[source], run_dir)
    sentinel = tmp_path / "pwned"
    _poison(run_dir / name, sentinel, as_torch)
    res = cli(*command(run_dir, runs))
    assert res.exit_code == 2, res.output
    assert name.split("/")[-1] in res.output and "Traceback" not in res.output
    assert not sentinel.exists()
