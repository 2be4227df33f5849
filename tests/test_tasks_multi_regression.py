"""Multi-label (several 0/1 columns, or one delimited column) and regression classifiers through the whole
chain: train-clf, predict, evaluate, export, load_classifier, a forward+backward ensemble, `ulmfit report`;
and the inputs they refuse."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, write_tasks_csv

STAGES = "train.stages=[{freeze_to: -1, epochs: 2, lr: 0.05}, {freeze_to: 0, epochs: 3, lr: 0.02}]"
MULTI_COLUMNS = ("data.label_col=[pos, neg]",)
MULTI_DELIM = ("data.label_col=tags", "data.label_delim=;")
REGRESSION = ("data.task=regression", "data.label_col=score", "model.y_range=[0.5, 4.5]")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tasks")
    return {"train": write_tasks_csv(tmp / "train.csv", 160, seed=1), "test": write_tasks_csv(tmp / "test.csv", 40, 2)}


def _train(cli, chain, tasks, run_dir, *sets, ft="ft", code=0):
    args = [a for s in (f"data.train={tasks['train']}", f"data.test={tasks['test']}", f"init.from_run={chain[ft]}",
                        STAGES, *sets) for a in ("--set", s)]
    res = cli("train-clf", "-c", TINY, *args, "--run-dir", run_dir)
    assert res.exit_code == code, res.output
    return (json.loads((run_dir / "results.json").read_text()) if code == 0 else None), res.output


def _evaluate(cli, models, data, out, *extra):
    res = cli("evaluate", *[a for m in models for a in ("-m", m)], "-i", data, "-o", out, *extra)
    assert res.exit_code == 0, res.output
    return json.loads((out / "report.json").read_text()), res.output


@pytest.mark.parametrize("form", [MULTI_COLUMNS, MULTI_DELIM], ids=["0/1 columns", "delimited"])
def test_multi_label_through_the_chain(cli, chain, tasks, tmp_path, form):
    from ulmfit_cli import load_classifier
    run_dir = tmp_path / "multi"
    results, out = _train(cli, chain, tasks, run_dir, *form)
    labels = ["pos", "neg"] if form is MULTI_COLUMNS else ["neg", "pos"]  # column order, or sorted names
    assert results["task"] == "multi_label" and results["labels"] == labels
    thresholds = json.loads((run_dir / "thresholds.json").read_text())
    assert thresholds == results["thresholds"] and set(thresholds) == set(labels)
    for key in ("micro_f1", "macro_f1", "subset_accuracy", "roc_auc"):
        assert 0 <= results[f"test_{key}"] <= 1 and f"baseline_test_{key}" in results
    assert "test_micro_f1" in out and "micro_f1" in cli("report", run_dir).output

    # evaluate scores the same model on the same file as train-clf did, with no flags for its columns
    report, table = _evaluate(cli, [run_dir], tasks["test"], tmp_path / "eval")
    assert report["task"] == "multi_label" and report["n"] == results["test_n"]
    for key in ("micro_f1", "macro_f1", "subset_accuracy", "roc_auc"):
        assert report[key] == pytest.approx(results[f"test_{key}"], abs=1e-6)
    assert set(report["per_label"]) == set(labels) and "threshold" in table

    # predict: the label set (joined by the delimiter) and one probability per label
    res = cli("predict", "-m", run_dir, "-i", tasks["test"], "-o", tmp_path / "preds.csv")
    assert res.exit_code == 0, res.output
    preds = pd.read_csv(tmp_path / "preds.csv", keep_default_na=False)
    probs = preds[[f"prob_{lbl}" for lbl in labels]].to_numpy()
    cut = np.array([thresholds[lbl] for lbl in labels])
    expected = [";".join(lbl for lbl, on in zip(labels, row) if on) for row in probs >= cut]
    assert preds["prediction"].tolist() == expected

    # the bundle predicts the same, thresholds included
    assert cli("export", "-m", run_dir, "-o", tmp_path / "bundle").exit_code == 0
    clf = load_classifier(tmp_path / "bundle", device="cpu")
    texts = pd.read_csv(tasks["test"])["text"].tolist()
    assert np.allclose(clf.predict_proba(texts), probs, atol=1e-5)
    assert clf.predict(texts) == [tuple(p.split(";")) if p else () for p in expected]


@pytest.mark.parametrize("form", [MULTI_DELIM, REGRESSION], ids=["multi-label", "regression"])
def test_a_small_set_repeated_to_min_steps_keeps_each_text_with_its_targets(cli, chain, tasks, tmp_path, form):
    """train.min_steps repeats a small training set within each epoch: a multi-label set's targets (a row of
    0/1 per text) were tiled along the labels, and the loss failed on the first batch (found by
    bench/gpu_check.sh --smoke; the tests turn min_steps off elsewhere)."""
    results, out = _train(cli, chain, tasks, tmp_path / "clf", *form, "train.min_steps=200")
    assert "each epoch goes 3 times over them" in out  # 5 epochs of the training rows' batches: < 200 steps
    assert results["task"] == ("multi_label" if form is MULTI_DELIM else "regression")


def test_regression_through_the_chain(cli, chain, tasks, tmp_path):
    from ulmfit_cli import load_classifier
    run_dir = tmp_path / "reg"
    results, _ = _train(cli, chain, tasks, run_dir, *REGRESSION)
    assert results["task"] == "regression" and results["labels"] == ["score"]
    for key in ("mae", "rmse", "pearson", "spearman"):
        assert f"test_{key}" in results and f"baseline_test_{key}" in results
    assert results["baseline"] == "tfidf-ridge" and "test_rmse" in cli("report", run_dir).output
    report, table = _evaluate(cli, [run_dir], tasks["test"], tmp_path / "eval")
    for key in ("mae", "rmse", "pearson", "spearman"):
        assert report[key] == pytest.approx(results[f"test_{key}"], abs=1e-5)
    assert "RMSE" in table and (tmp_path / "eval" / "predictions.npy").is_file()

    res = cli("predict", "-m", run_dir, "-i", tasks["test"], "-o", tmp_path / "preds.jsonl")
    assert res.exit_code == 0, res.output
    preds = pd.read_json(tmp_path / "preds.jsonl", lines=True)["prediction"].to_numpy()
    assert ((preds > 0.5) & (preds < 4.5)).all()  # model.y_range: fastai's sigmoid range
    truth = pd.read_csv(tasks["test"])["score"].to_numpy()
    assert np.abs(preds - truth).mean() == pytest.approx(report["mae"], abs=1e-5)
    assert cli("export", "-m", run_dir, "-o", tmp_path / "bundle").exit_code == 0
    texts = pd.read_csv(tasks["test"])["text"].tolist()
    assert np.allclose(load_classifier(tmp_path / "bundle", device="cpu").predict(texts), preds, atol=1e-5)


@pytest.mark.parametrize("task", [MULTI_COLUMNS, REGRESSION], ids=["multi-label", "regression"])
def test_forward_backward_ensemble_averages_the_outputs(cli, chain, tasks, tmp_path, task):
    from ulmfit_cli import load_classifier
    fwd, bwd = tmp_path / "fwd", tmp_path / "bwd"
    _train(cli, chain, tasks, fwd, *task, "data.baseline=false")
    _train(cli, chain, tasks, bwd, *task, "data.baseline=false", "data.backwards=true", ft="ft-bwd")
    texts = pd.read_csv(tasks["test"])["text"].tolist()
    a, b = (load_classifier(m, device="cpu") for m in (fwd, bwd))
    both = load_classifier(fwd, bwd, device="cpu")
    assert np.allclose(both.predict_proba(texts), (a.predict_proba(texts) + b.predict_proba(texts)) / 2, atol=1e-6)
    report, _ = _evaluate(cli, [fwd, bwd], tasks["test"], tmp_path / "eval")
    assert report["models"] == [str(fwd), str(bwd)] and report["n"] == len(texts)
    if task is MULTI_COLUMNS:
        assert np.allclose(both.thresholds, (a.thresholds + b.thresholds) / 2)


def _write(tmp_path, name, **columns):
    f = tmp_path / name
    pd.DataFrame({"text": ["good words here", "bad words there", "more words", "last words"], **columns}).to_csv(
        f, index=False)
    return f


def test_bad_task_inputs_are_named(cli, chain, tasks, tmp_path):
    not01 = _write(tmp_path, "not01.csv", pos=[0, 1, 2, 0], neg=[1, 0, 0, 1])
    _, out = _train(cli, chain, {**tasks, "train": not01}, tmp_path / "a", "data.label_col=[pos, neg]", code=2)
    assert "row 3, column 'pos' holds '2'" in out and "0 or 1" in out
    words = _write(tmp_path, "words.csv", score=["1.5", "2", "three", "4"])
    _, out = _train(cli, chain, {**tasks, "train": words}, tmp_path / "b", "data.task=regression",
                    "data.label_col=score", code=2)
    assert "row 3, column 'score' holds 'three', not a number" in out
    empty = _write(tmp_path, "empty.csv", pos=[0, 0, 0, 0], neg=[0, 0, 0, 0])
    _, out = _train(cli, chain, {**tasks, "train": empty}, tmp_path / "c", "data.label_col=[pos, neg]", code=2)
    assert "every document has an empty label set" in out
    _, out = _train(cli, chain, tasks, tmp_path / "d", *MULTI_COLUMNS, "train.class_weights={toxic: 2}", code=2)
    assert "'toxic' is not a class" in out
    _, out = _train(cli, chain, tasks, tmp_path / "e", "data.label_col=[]", code=2)
    assert "data.label_col" in out
    unseen = _write(tmp_path, "unseen.csv", tags=["pos", "neg;spam", "", "pos"])
    _, out = _train(cli, chain, {**tasks, "test": unseen}, tmp_path / "f", *MULTI_DELIM, code=2)
    assert "labels the model never saw: spam" in out
    for name in "abcdef":
        assert not (tmp_path / name).exists()  # nothing left behind by a refused run


def test_weights_and_monitors_of_each_task(cli, chain, tasks, tmp_path):
    results, _ = _train(cli, chain, tasks, tmp_path / "w", *MULTI_COLUMNS, "train.class_weights=balanced",
                        "train.monitor=micro_f1", "train.keep=best", "model.threshold=0.4", "data.baseline=false",
                        "data.min_valid=1")  # a 10 % split: as many positives as negatives per label
    assert results["class_weights"] == {"pos": 1.0, "neg": 1.0}  # as many positives as negatives per label
    assert results["thresholds"] == {"pos": 0.4, "neg": 0.4} and results["monitor"] == "micro_f1"
    lines = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    f1 = [r["f1_micro"] for r in lines]
    assert results["best_epoch"] == f1.index(max(f1)) + 1 == results["kept_epoch"]
    results, _ = _train(cli, chain, tasks, tmp_path / "r", *REGRESSION, "train.monitor=mae", "data.baseline=false")
    maes = [json.loads(x)["mae"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert results["best_epoch"] == maes.index(min(maes)) + 1  # lower is better
