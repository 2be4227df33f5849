"""Making the most of a small labelled set: unlabelled text for the LM (`data.extra_text`), forward and
backward in one command (`--directions both`), and the recipe search (`ulmfit tune`)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

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


def test_directions_both_trains_a_pair_that_predicts_as_one_ensemble(cli, chain, tmp_path):
    import numpy as np

    from ulmfit_cli import load_classifier
    ft, clf = tmp_path / "ft-pair", tmp_path / "clf-pair"
    res = cli("finetune-lm", "-c", TINY, "--set", f"data.train={chain['train']}", "--set",
              f"init.from_run={chain['lm']}",
              "--set", f"init.from_run_backward={chain['lm-bwd']}", "--set", "train.epochs=1", "--directions", "both",
              "--run-dir", ft)
    assert res.exit_code == 0, res.output
    assert json.loads((ft / "directions.json").read_text())["members"] == {"forward": "fwd", "backward": "bwd"}
    assert "backwards: true" in (ft / "bwd" / "config.yaml").read_text() and (ft / "fwd" / "lm.pth").is_file()
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"data.test={chain['test']}",
              "--set", f"init.from_run={ft}", "--set", "train.stages=[{freeze_to: -1, epochs: 2, lr: 0.05}]",
              "--directions", "both", "--run-dir", clf)
    assert res.exit_code == 0, res.output
    results = json.loads((clf / "results.json").read_text())
    assert results["directions"] == "both" and "fwd_test_accuracy" in results and "bwd_test_accuracy" in results
    assert "baseline_test_accuracy" in results and not list(clf.glob(".*"))  # no locks or staging left inside
    assert "backwards: true" in (clf / "bwd" / "config.yaml").read_text()
    assert str(ft / "bwd") in (clf / "bwd" / "config.yaml").read_text()  # each member from its own upstream

    # the pair is one model: evaluate gives results.json's ensemble figures, predict the mean probabilities
    res = cli("evaluate", "-m", clf, "-i", chain["test"], "-o", tmp_path / "eval")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["accuracy"] == results["test_accuracy"] and report["baseline"]["accuracy"] == \
        results["baseline_test_accuracy"]
    texts = pd.read_csv(chain["test"])["text"].tolist()
    a, b = (load_classifier(clf / m, device="cpu").predict_proba(texts) for m in ("fwd", "bwd"))
    assert np.allclose(load_classifier(clf, device="cpu").predict_proba(texts), (a + b) / 2, atol=1e-6)
    assert cli("predict", "-m", clf, "-i", chain["test"], "-o", tmp_path / "preds.csv").exit_code == 0
    preds = pd.read_csv(tmp_path / "preds.csv")
    assert np.allclose(preds[[c for c in preds if c.startswith("prob_")]].to_numpy(), (a + b) / 2, atol=1e-6)
    assert cli("export", "-m", clf, "-o", tmp_path / "bundle").exit_code == 0
    assert np.allclose(load_classifier(tmp_path / "bundle", device="cpu").predict_proba(texts), (a + b) / 2,
                       atol=1e-6)

    # a pair is not a single upstream; a single upstream needs its backward partner
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={ft}",
              "--run-dir", tmp_path / "one")
    assert res.exit_code == 2 and "is a forward+backward pair" in res.output
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={chain['ft']}",
              "--directions", "both", "--run-dir", tmp_path / "half")
    assert res.exit_code == 2 and "init.from_run_backward" in res.output
    assert not (tmp_path / "half").exists() and not (tmp_path / ".half.partial").exists()


def test_tune_searches_on_valid_only_resumes_after_a_kill_and_writes_a_config_train_clf_takes(cli, chain, tmp_path):
    from conftest import sigkill_after_first_row
    test = tmp_path / "test.csv"
    test.write_bytes(b"text,label\n\xff\xfe not text\n")  # opening it fails: a trial that read it would stop
    test.chmod(0)
    out = tmp_path / "tune"
    args = ["-c", TINY, *(a for s in (f"data.train={chain['train']}", f"data.test={test}",
                                      f"init.from_run={chain['ft']}",
                                      "train.stages=[{freeze_to: -1, lr: 0.05}, {freeze_to: 0, lr: 0.02}]",
                                      "search.epochs=[1, 2]", "search.bs=[8, 16]", "search.early_epochs=null",
                                      "search.prune=false", "train.min_steps=null") for a in ("--set", s)),
            "--trials", "3", "--run-dir", str(out)]
    sigkill_after_first_row(["tune", *args], out / "trials.csv", "trial")  # during the second trial
    res = cli("tune", "--run-dir", out, "--resume")
    assert res.exit_code == 0, res.output
    assert "1 of 3 trial(s) already done" in res.output and "(3/3 done)" in res.output
    trials = pd.read_csv(out / "trials.csv")
    assert (trials["state"] == "complete").sum() == 3 and set(trials["state"]) <= {"complete", "fail"}
    assert trials["bs"].isin([8, 16]).all() and trials["epochs"].isin([1, 2]).all()
    assert (out / "trials.png").read_bytes()[:4] == b"\x89PNG" and not (out / "trials").exists()
    best = trials.loc[trials["valid_accuracy"].idxmax()]
    assert f"best valid accuracy {best['valid_accuracy']:.4f}" in res.output
    # best.yaml is a train-clf config with the best trial's values, keeping the test file for the final run
    res = cli("train-clf", "--config", out / "best.yaml", "--print-config")
    assert res.exit_code == 0, res.output
    import yaml
    cfg = yaml.safe_load(res.output)
    assert cfg["train"]["bs"] == best["bs"] and cfg["train"]["stages"][-1]["epochs"] == best["epochs"]
    assert cfg["train"]["stages"][-1]["lr"] == pytest.approx(0.02 * best["lr_scale"])
    assert cfg["data"]["test"] == str(test) and cfg["train"]["keep"] == "best"


def test_an_interrupted_pair_resumes_its_unfinished_member(chain, tmp_path):
    import torch
    from fastai.callback.core import Callback

    from ulmfit_cli import api

    class StopInSecondMember(Callback):
        """Ctrl-C in the backward member's second epoch (the forward one has finished)."""
        epochs = 0

        def after_epoch(self):
            type(self).epochs += 1
            if type(self).epochs == 4:  # 2 epochs of fwd, then the 2nd of bwd
                raise KeyboardInterrupt
    sets = [f"data.train={chain['train']}", f"init.from_run={chain['ft']}", f"init.from_run_backward={chain['ft-bwd']}",
            "train.stages=[{freeze_to: -1, epochs: 2, lr: 0.05}]", "data.baseline=false"]
    ref = api.train("train-clf", [TINY], sets, run_dir=tmp_path / "ref", directions="both")
    try:
        api.train("train-clf", [TINY], sets, run_dir=tmp_path / "pair", directions="both",
                  callbacks=[StopInSecondMember()])
    except KeyboardInterrupt:
        pass
    assert not (tmp_path / "pair").exists() and (tmp_path / ".pair.partial" / "fwd" / "model.pth").is_file()
    again = api.train("train-clf", run_dir=tmp_path / "pair", resume=True, directions="both")
    assert again["valid_accuracy"] == ref["valid_accuracy"]
    for member in ("fwd", "bwd"):
        a, b = (torch.load(d / member / "model.pth", weights_only=True) for d in (tmp_path / "ref", tmp_path / "pair"))
        assert all(torch.equal(a[k], b[k]) for k in a), member


def test_a_pruned_trial_is_given_up_quietly_and_leaves_nothing(chain, tmp_path, capsys):
    import optuna

    from ulmfit_cli import api
    from ulmfit_cli.errors import Abandoned
    from ulmfit_cli.recipes.tune import ReportToOptuna
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial = study.ask()  # any accuracy is below 2: Optuna prunes at the first report
    reporter = ReportToOptuna(trial, "accuracy")
    with pytest.raises(Abandoned):
        api.train("train-clf", [TINY], [f"data.train={chain['train']}", f"init.from_run={chain['ft']}",
                                        "train.stages=[{freeze_to: -1, epochs: 3}]", "data.baseline=false"],
                  run_dir=tmp_path / "trial", callbacks=[reporter])
    assert reporter.epochs == 1 and list(trial.storage.get_trial(trial._trial_id).intermediate_values) == [1]
    assert not (tmp_path / "trial").exists() and not (tmp_path / ".trial.partial").exists()
    assert "unfinished run is kept" not in capsys.readouterr().err
