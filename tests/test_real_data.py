"""The pipeline on real public data from ../shared/data (Wikipedia excerpt, TREC-6), tiny model.

Skipped on a fresh clone, where that folder is absent.
"""
import json

import pandas as pd
import pytest

from conftest import SHARED_DATA, TINY

WIKI = SHARED_DATA / "wiki" / "enwiki-pages-articles-sample.xml.bz2"
TREC = SHARED_DATA / "trec6"
pytestmark = pytest.mark.skipif(not (WIKI.is_file() and (TREC / "train.csv").is_file()),
                                reason="../shared/data (Wikipedia excerpt, TREC-6) is absent")


def test_wikipedia_then_trec6(cli, tmp_path):
    lm, ft, clf = tmp_path / "lm", tmp_path / "ft", tmp_path / "clf"
    res = cli("pretrain", "-c", TINY, "--set", f"data.source={WIKI}", "--set", "data.max_docs=12",
              "--set", "train.bs=32", "--run-dir", lm)
    assert res.exit_code == 0, res.output
    assert json.loads((lm / "results.json").read_text())["train_tokens"] > 10_000
    res = cli("finetune-lm", "-c", TINY, "--set", f"data.train={TREC / 'train.csv'}", "--set", "train.bs=32",
              "--set", f"init.from_run={lm}", "--run-dir", ft)
    assert res.exit_code == 0, res.output
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={TREC / 'train.csv'}",
              "--set", f"data.test={TREC / 'test.csv'}", "--set", f"init.from_run={ft}", "--set", "train.bs=32",
              "--set", "train.stages=[{freeze_to: -1, lr: 0.05}, {freeze_to: 0, lr: 0.01}]", "--run-dir", clf)
    assert res.exit_code == 0, res.output
    results = json.loads((clf / "results.json").read_text())
    assert results["labels"] == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"] and results["test_n"] == 500
    # A 16-dim model on 12 articles, trained for seconds, is weak but must beat the majority class
    # (DESC, 27.6 % of the test set); it scored 32.0 % when this floor was set (CPU, seed 42).
    labels = pd.read_csv(TREC / "test.csv")["label"]
    majority = labels.value_counts(normalize=True).max()
    assert results["test_accuracy"] > majority and results["test_accuracy"] >= 0.30, results
    assert 0 < results["test_macro_f1"] <= 1
    # the TF-IDF baseline on the same splits: 89.0 % test (C = 100) when this was written
    assert results["baseline_C"] in (1.0, 10.0, 100.0) and results["baseline_test_accuracy"] > 0.85, results
