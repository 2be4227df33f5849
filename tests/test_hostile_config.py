"""Hostile input to configs, run reports and generation (issue 24): tune's search ranges, duplicate YAML keys,
a bad value blamed on its real source, a damaged metrics.jsonl, the lowest --temperature. Each case: exit 2
(or 0 where the input is valid) and a message naming the key, file or line, never a traceback."""
from __future__ import annotations

import re
import shutil

import pytest
import yaml

from conftest import TINY


def _clean(res, *needles, code: int = 2) -> str:
    assert res.exit_code == code, (res.exit_code, res.output)
    assert "Traceback" not in res.output, res.output
    for n in needles:
        assert str(n) in res.output, (n, res.output)
    return res.output


def _clf_config(cli, *args):
    return cli("train-clf", "-c", TINY, "--set", "data.train=x.csv", *args, "--print-config")


# ---------------------------------------------------------------- 1. tune's search ranges
@pytest.mark.parametrize("item", [
    "search.lr_scale=[4,0.25]", "search.epochs=[3,1]",           # low > high
    "search.lr_scale=[-1,2]", "search.lr_div=[0,2]",              # log scale: not above 0
    "search.bs=[0,16]",                                           # train.bs needs >= 2
    "search.epochs=[0,0]", "search.early_epochs=[0,3]",           # at least one epoch
    "search.drop_mult=[0.5,5]",                                   # outside [0, 2)
])
def test_search_range_refused_naming_key_and_source(cli, item):
    key = item.partition("=")[0]
    _clean(_clf_config(cli, "--set", item), f"{key}:", f"[from --set {item}]")


def test_empty_search_bs_refused_pointing_to_null(cli, tmp_path):
    out = _clean(_clf_config(cli, "--set", "search.bs=[]"), "search.bs:", "null")
    assert "[from --set search.bs=[]]" in out
    # from a file, the file is named; `ulmfit tune` refuses it before any trial
    bad = tmp_path / "search.yaml"
    bad.write_text("search:\n  bs: []\n")
    _clean(cli("tune", "-c", TINY, "-c", bad, "--set", "data.train=x.csv", "--run-dir", tmp_path / "tune"),
           "search.bs:", f"[from {bad}]")
    assert not (tmp_path / "tune").exists()


def test_valid_search_ranges_still_accepted(cli):
    res = _clf_config(cli, "--set", "search.lr_scale=[1,1]", "--set", "search.lr_div=[1,10]",
                      "--set", "search.drop_mult=[0,1]", "--set", "search.bs=null",
                      "--set", "search.epochs=[1,1]")
    assert res.exit_code == 0, res.output
    search = yaml.safe_load(res.output)["search"]
    assert search["bs"] is None and search["lr_scale"] == [1.0, 1.0] and search["epochs"] == [1, 1]


# ---------------------------------------------------------------- 2. duplicate YAML keys
def test_duplicate_yaml_key_names_file_key_and_line(cli, tmp_path):
    bad = tmp_path / "dup.yaml"
    bad.write_text("train:\n  bs: 8\n  lr: 0.1\n  bs: 16\n")
    out = _clean(cli("pretrain", "-c", bad, "--set", "data.source=x", "--print-config"), bad, "'bs'")
    assert re.search(r"line 4\b", out), out
    bad.write_text("train:\n  bs: 8\nmodel: {}\ntrain:\n  lr: 0.1\n")
    out = _clean(cli("pretrain", "-c", bad, "--set", "data.source=x", "--print-config"), bad, "'train'")
    assert re.search(r"line 4\b", out), out


def test_yaml_merge_keys_are_not_duplicates(cli, tmp_path):
    ok = tmp_path / "merge.yaml"
    ok.write_text("train: {<<: {bs: 8, bptt: 16}, bs: 12}\n")
    res = cli("pretrain", "-c", ok, "--set", "data.source=x", "--print-config")
    assert res.exit_code == 0, res.output
    train = yaml.safe_load(res.output)["train"]
    assert train["bs"] == 12 and train["bptt"] == 16


# ---------------------------------------------------------------- 3. the bad value's own source
def test_section_given_as_list_blames_the_file_not_the_set(cli, tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("train: [1, 2]\n")
    out = _clean(cli("pretrain", "-c", TINY, "-c", bad, "--set", "data.source=x", "--set", "train.bs=16",
                     "--print-config"), bad, "train")
    assert "not a section" in out
    # without the --set, the schema's error is blamed on the file, not on tiny.yaml's train keys
    out = _clean(cli("pretrain", "-c", TINY, "-c", bad, "--set", "data.source=x", "--print-config"),
                 f"[from {bad}]")
    assert str(TINY) not in out


def test_section_set_to_a_value_blames_that_set(cli):
    out = _clean(cli("pretrain", "-c", TINY, "--set", "data.source=x", "--set", "train=5", "--print-config"),
                 "train:", "[from --set train=5]")
    assert str(TINY) not in out
    out = _clean(cli("pretrain", "--set", "data.source=x", "--set", "train.bs=16", "--set", "train=5",
                     "--print-config"), "[from --set train=5]")
    assert "train.bs=16" not in out
    # a --set into it afterwards names the --set that made it a value
    _clean(cli("pretrain", "--set", "data.source=x", "--set", "train=5", "--set", "train.bs=16",
               "--print-config"), "--set train=5", "not a section")


# ---------------------------------------------------------------- 4. a damaged metrics.jsonl
def _run_copy(chain, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("metrics.jsonl", "results.json"):
        shutil.copyfile(chain["lm"] / name, run / name)
    return run, (run / "metrics.jsonl").read_text().splitlines()


def test_report_refuses_random_bytes_naming_file_and_line(cli, chain, tmp_path):
    run, lines = _run_copy(chain, tmp_path)
    assert _clean(cli("report", run), code=0)
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b"\xff\xfe\x00\x93garbage\x80\n")
    out = _clean(cli("report", run), "metrics.jsonl")
    assert re.search(rf"line {len(lines) + 1}\b", out), out


def test_report_names_the_file_line_of_truncated_json(cli, chain, tmp_path):
    run, lines = _run_copy(chain, tmp_path)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n\n" + lines[-1][:50])
    out = _clean(cli("report", run), "metrics.jsonl")
    assert re.search(rf"line {len(lines) + 2}\b", out) and "line 1 column" not in out, out
    (run / "metrics.jsonl").write_text("\n".join([*lines, "42"]) + "\n")  # JSON, but not a record
    out = _clean(cli("report", run), "metrics.jsonl")
    assert re.search(rf"line {len(lines) + 1}\b", out), out


# ---------------------------------------------------------------- 5. the lowest temperature
def test_generate_at_the_lowest_temperature(cli, chain):
    for temperature in ("0.01", "0.05"):
        out = _clean(cli("generate", "--run-dir", chain["lm"], "--prompt", "the history", "--n-words", "30",
                         "--temperature", temperature, "--seed", "1"), code=0)
        assert "xxunk" not in out and len(out.split()) > 20, out
