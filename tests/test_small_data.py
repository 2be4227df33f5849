"""Making the most of a small labelled set: unlabelled text for the LM (`data.extra_text`), forward and
backward in one command (`--directions both`), and the recipe search (`ulmfit tune`)."""
from __future__ import annotations

import json

import pandas as pd

from conftest import TINY


def test_extra_text_joins_the_lms_training_split_only(cli, chain, tmp_path):
    base = ["-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={chain['lm']}",
            "--set", "train.epochs=1"]
    assert cli("finetune-lm", *base, "--run-dir", tmp_path / "plain").exit_code == 0
    extra = tmp_path / "unlabelled.txt"
    extra.write_text("zebra quagga okapi\nokapi zebra\n\n", encoding="utf-8")  # one blank line: dropped
    res = cli("finetune-lm", *base, "--set", f"data.extra_text=[{chain['test']}, {extra}]", "--run-dir",
              tmp_path / "extra")
    assert res.exit_code == 0, res.output
    plain, more = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("plain", "extra"))
    n_test = len(pd.read_csv(chain["test"]))
    assert more["train_docs"] == plain["train_docs"] + n_test + 2 and more["valid_docs"] == plain["valid_docs"]
    assert f"data.extra_text: {n_test + 2:,} more document(s)" in res.output
    vocab = json.loads((tmp_path / "extra" / "vocab.json").read_text())
    assert "okapi" in vocab and "okapi" not in json.loads((tmp_path / "plain" / "vocab.json").read_text())
    res = cli("finetune-lm", *base, "--set", f"data.extra_text=[{tmp_path / 'missing.csv'}]", "--run-dir",
              tmp_path / "bad")
    assert res.exit_code == 2 and "data.extra_text[0]" in res.output and "missing.csv" in res.output
