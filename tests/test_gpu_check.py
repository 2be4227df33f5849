"""bench/gpu_check.sh --smoke: every step of the GPU proof at tiny sizes on the CPU, so that the script a
GPU call depends on cannot rot. Marked `gpu_check` (`pytest -m "not gpu_check"` skips it locally); `make
test` runs it."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.gpu_check


def test_the_smoke_run_passes_every_step_and_writes_the_summary(tmp_path):
    out = tmp_path / "out"
    # a budget no step is skipped for on a slow machine: its time is stated in docs/benchmarks.md, not held here
    res = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--smoke", "--out", str(out),
                          "--budget", "900"],
                         env={**os.environ, "PYTHON": sys.executable},
                         capture_output=True, text=True, timeout=900, cwd=tmp_path)  # the budget
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert summary["mode"] == "smoke" and summary["device"].startswith("CPU")
    assert not summary["failed"] and not summary["skipped"], json.dumps(summary["steps"], indent=1)[-4000:]
    expected = {"train_speed_bs64",
                "pretrain", "finetune_lm", "train_clf_single_label", "train_clf_multi_label", "train_clf_regression",
                "pretrain_backward", "finetune_lm_directions_both",
                "train_clf_directions_both", "resume_after_kill", "resume", "predict", "evaluate", "generate",
                "export_onnx", "serve", "ddp_2_processes", "full_pretrain", "full_finetune_lm", "full_train_clf",
                "full_evaluate", "predict_speed"}
    assert expected <= set(steps)
    for name in expected:
        assert (out / steps[name]["log"]).is_file(), name
    rows = {r["path"]: r for r in steps["train_speed_bs64"]["result"]["rows"]}
    assert set(rows) == {"stock fastai", "ulmfit", "bare loop", "ulmfit bf16", "ulmfit fp32"}
    assert all(r["tokens_per_s"] > 0 for r in rows.values()) and rows["ulmfit fp32"]["precision"] == "fp32"
    profiled = steps["train_speed_bs64"]["result"]["profile"]
    assert "Self CPU" in profiled["table"] and profiled["syncs"]
    assert set(summary["targets"]) == {"ulmfit_over_stock_bs64", "ulmfit_over_bare_bs64",
                                       "valid_loss_ulmfit_over_stock"}
    assert steps["resume"]["result"]["resumed_mid_epoch"]
    assert steps["resume"]["result"]["max_abs_weight_diff"] < 1e-5  # the CPU: the uninterrupted weights
    assert steps["serve"]["result"]["predictions"][0]["label"]
    assert steps["predict"]["result"]["rows"] == 240
    table = (out / steps["predict_speed"]["log"]).read_text()
    for row in ("| stock fastai: learn.predict / get_preds(test_dl), bs 64 |", "| ulmfit PyTorch fp32 |",
                "| ulmfit ONNX fp32 |", "single text p50: ulmfit", "ONNX RSS / PyTorch RSS", "int8 check"):
        assert row in table, table[-3000:]
    assert "speed ratio ulmfit / stock" in (out / steps["train_speed_bs64"]["log"]).read_text()
    assert summary["pipeline"]["test_accuracy"] is not None and steps["full_evaluate"]["result"]["n"] == 500
