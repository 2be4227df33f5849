"""Few labels (issue 25): the blend with the baseline, the baseline saved without pickle, self-training on
unlabelled text, the schedule and validation split that adapt to a small set, and `ulmfit curve`."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, sigkill_after_first_row, write_easy_csv, write_tasks_csv

from ulmfit_cli import api, load_classifier
from ulmfit_cli.classify.baseline import tfidf_baseline
from ulmfit_cli.classify.linear import LinearBaseline
from ulmfit_cli.classify.blend import GRID, choose_weight, mix
from ulmfit_cli.classify.self_training import confident_rows, unlabelled_pool
from ulmfit_cli.classify.task import MULTI_LABEL, REGRESSION, SINGLE_LABEL
from ulmfit_cli.errors import UlmfitError

STAGES = "train.stages=[{freeze_to: -1, epochs: 1, lr: 0.05}, {freeze_to: 0, epochs: 2, lr: 0.02}]"


def _texts(path) -> list[str]:
    return pd.read_csv(path)["text"].tolist()


# ---------------------------------------------------------------- the baseline, saved without pickle
@pytest.mark.parametrize("task", [SINGLE_LABEL, MULTI_LABEL, REGRESSION])
def test_a_saved_baseline_is_rebuilt_with_scikit_learns_own_outputs(task, tmp_path):
    frame = pd.read_csv(write_tasks_csv(tmp_path / "tasks.csv", 120))
    if task is SINGLE_LABEL:  # three classes: the softmax of a multinomial model
        labels, y = ["0", "1", "2"], (frame["pos"] + frame["neg"]).to_numpy()
    elif task is MULTI_LABEL:
        labels, y = ["pos", "neg"], frame[["pos", "neg"]].to_numpy(dtype=np.float32)
    else:
        labels, y = ["score"], frame["score"].to_numpy(dtype=np.float32)
    texts = frame["text"].tolist()
    train, valid = (texts[:80], y[:80]), (texts[80:], y[80:])
    figures, base, outputs = tfidf_baseline(train, valid, None, labels, task)
    # scikit-learn's own model at the setting the baseline picked, on the same features
    model = dict(task.linear_fits(base.features(train[0]), train[1]))[figures[f"baseline_{task.baseline_setting}"]]
    x = base.features(valid[0])
    expected = model.predict(x).reshape(-1, 1) if task is REGRESSION else model.predict_proba(x)
    np.testing.assert_allclose(outputs["valid"], expected, rtol=1e-6, atol=1e-9)
    base.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    again = LinearBaseline.load(tmp_path, "--model")
    # row by row in NumPy (the runtime's way), against scikit-learn's sparse product: to rounding
    np.testing.assert_allclose(again.outputs(valid[0]), outputs["valid"], rtol=0, atol=1e-12)


def test_a_binary_baselines_probabilities_and_an_absent_class(tmp_path):
    texts = _texts(write_easy_csv(tmp_path / "easy.csv", 80))
    y = np.array([i % 2 for i in range(80)])
    _, base, out = tfidf_baseline((texts[:60], y[:60]), (texts[60:], y[60:]), None, ["neg", "pos", "never"])
    assert out["valid"].shape == (20, 3) and (out["valid"][:, 2] == 0).all()  # a class with no rows never wins
    np.testing.assert_allclose(out["valid"].sum(1), 1)


def test_a_baseline_file_that_is_not_one_is_refused_without_unpickling(tmp_path):
    texts = _texts(write_easy_csv(tmp_path / "easy.csv", 60))
    y = np.array([i % 2 for i in range(60)])
    _, base, _ = tfidf_baseline((texts[:40], y[:40]), (texts[40:], y[40:]), None, ["neg", "pos"])
    base.save(tmp_path)
    np.savez(tmp_path / "baseline.npz", coef=np.array([object()], dtype=object))  # an object array is a pickle
    with pytest.raises(UlmfitError, match="baseline.npz"):
        LinearBaseline.load(tmp_path, "--model")
    (tmp_path / "baseline.json").write_text('{"format": 1, "task": "single_label", "vectorizers": "x"}')
    with pytest.raises(UlmfitError, match="not an ulmfit baseline"):
        LinearBaseline.load(tmp_path, "--model")


# ---------------------------------------------------------------- the blend
def test_the_blend_weight_is_chosen_on_valid_in_the_grid():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = np.eye(2)[y] * 0.6 + 0.2  # right on every row
    noise = rng.dirichlet([1, 1], 200)
    assert choose_weight(SINGLE_LABEL, ["a", "b"], y, good, noise).weight == 1.0
    assert choose_weight(SINGLE_LABEL, ["a", "b"], y, noise, good).weight == 0.0
    half = choose_weight(SINGLE_LABEL, ["a", "b"], y, noise, noise)
    assert 0 <= half.weight <= 1 and half.weight in GRID


def test_train_clf_blends_and_predict_evaluate_export_agree_with_results(chain, tmp_path):
    run = tmp_path / "clf"
    r = api.train("train-clf", [TINY], [f"data.train={chain['train']}", f"data.test={chain['test']}",
                                        f"init.from_run={chain['ft']}", STAGES, "model.blend=0.5"], run_dir=run)
    assert r["blend_weight"] == 0.5 and {"classifier_test_accuracy", "baseline_test_accuracy"} <= set(r)
    assert (run / "blend.json").is_file() and (run / "baseline.npz").is_file()
    test = pd.read_csv(chain["test"])
    texts, y = test["text"].tolist(), test["label"].map({"neg": 0, "pos": 1}).to_numpy()
    clf = load_classifier(run)
    probs = clf.predict_proba(texts)
    assert (probs.argmax(1) == y).mean() == pytest.approx(r["test_accuracy"])
    weight, baseline = clf.blend
    alone = clf.proba_of_ids(clf.token_ids(texts))
    np.testing.assert_allclose(probs, mix(0.5, alone, baseline.outputs(texts)), rtol=1e-6)
    assert (alone.argmax(1) == y).mean() == pytest.approx(r["classifier_test_accuracy"])
    assert (baseline.outputs(texts).argmax(1) == y).mean() == pytest.approx(r["baseline_test_accuracy"])
    clf.blend = (1.0, baseline)  # w = 1: the classifier's probabilities; w = 0: the baseline's
    np.testing.assert_allclose(clf.predict_proba(texts), alone, rtol=1e-6)
    clf.blend = (0.0, baseline)
    np.testing.assert_allclose(clf.predict_proba(texts), baseline.outputs(texts), rtol=1e-6)
    report, _ = api.evaluate([run], chain["test"], tmp_path / "eval", baseline=False)
    assert report["accuracy"] == pytest.approx(r["test_accuracy"])
    api.export(run, tmp_path / "bundle")
    assert (tmp_path / "bundle" / "baseline.json").is_file()
    np.testing.assert_allclose(load_classifier(tmp_path / "bundle").predict_proba(texts), probs, rtol=1e-6)
    frame = api.predict([tmp_path / "bundle"], chain["test"], tmp_path / "preds.csv")
    np.testing.assert_allclose(frame[["prob_neg", "prob_pos"]].to_numpy(), probs, rtol=1e-5)


# ---------------------------------------------------------------- self-training
def test_self_training_never_labels_validation_or_test_texts_and_blend_off_keeps_the_classifier(chain, tmp_path):
    valid, test = write_easy_csv(tmp_path / "valid.csv", 40, seed=7), chain["test"]
    new = write_easy_csv(tmp_path / "new.csv", 60, seed=9)
    pile = tmp_path / "unlabelled.txt"  # every text the user has: labelled, validation, test and new ones
    pile.write_text("\n".join(_texts(chain["train"]) + _texts(valid) + _texts(test) + _texts(new)) + "\n")
    run = tmp_path / "clf"
    r = api.train("train-clf", [TINY], [f"data.train={chain['train']}", f"data.valid={valid}", f"data.test={test}",
                                        f"init.from_run={chain['ft']}", STAGES, f"data.unlabelled=[{pile}]",
                                        "train.self_training_top=1.0", "model.blend=off"], run_dir=run)
    assert "blend_weight" not in r and not (run / "blend.json").exists()  # model.blend: off
    assert r["test_accuracy"] == r["classifier_test_accuracy"] and load_classifier(run).blend is None
    rounds = r["self_training"]
    assert [x["round"] for x in rounds][:2] == [0, 1] and "valid_accuracy" in rounds[1]
    new_texts = set(_texts(new)) - set(_texts(chain["train"]))
    pseudo = pd.read_csv(run / "pseudo_labels.csv")
    assert 0 < len(pseudo) == rounds[1]["pseudo_labels"] <= len(new_texts)  # the class quotas may keep fewer
    assert set(pseudo["text"]) <= new_texts
    assert not set(pseudo["text"]) & (set(_texts(valid)) | set(_texts(test)) | set(_texts(chain["train"])))
    # the model predict loads is the kept round's: round 0's figure, or a better round's
    best = max(x["valid_accuracy"] for x in rounds if x["kept"])
    assert r["classifier_valid_accuracy"] == pytest.approx(best)


def test_self_training_falls_back_to_the_lms_extra_text(chain, tmp_path):
    new = write_easy_csv(tmp_path / "new.csv", 40, seed=11)
    ft = tmp_path / "ft"
    api.train("finetune-lm", [TINY], [f"data.train={chain['train']}", f"init.from_run={chain['lm']}",
                                      f"data.extra_text=[{new}]", "train.epochs=1"], run_dir=ft)
    run = tmp_path / "clf"
    r = api.train("train-clf", [TINY], [f"data.train={chain['train']}", f"init.from_run={ft}", STAGES,
                                        "train.self_training_rounds=1", "model.blend=off"], run_dir=run)
    assert r["self_training"][1]["pseudo_labels"] > 0
    assert set(pd.read_csv(run / "pseudo_labels.csv")["text"]) <= set(_texts(new))


def test_unlabelled_pool_and_confident_rows():
    pool, left = unlabelled_pool(["a", " b ", "b", "held", ""], ["held"])
    assert pool == ["a", " b "] and left == 3
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.99, 0.01], [0.7, 0.3]])
    y_train = np.array([0, 1])  # half and half: each class keeps at most top x 6 x 0.5 rows
    assert confident_rows(probs, y_train, 0.5).tolist() == [0, 2, 3, 4]
    # four rows predicted 0, but half the training labels are 0: at most 3 of them, the least confident left out
    assert confident_rows(probs, y_train, 1.0).tolist() == [0, 2, 3, 4, 5]


# ---------------------------------------------------------------- a schedule and a split that fit the set
def test_min_steps_scales_every_stage_and_min_valid_holds_out_enough(chain, tmp_path):
    from ulmfit_cli.classify.splits import read_splits
    from ulmfit_cli.recipes import STAGES as REGISTRY
    from ulmfit_cli.recipes.train_clf import schedule
    from ulmfit_cli.resolve import config_of
    cfg = config_of(REGISTRY["train-clf"], [TINY], [f"data.train={chain['train']}", STAGES, "train.bs=8",
                                                    "train.min_steps=100"])
    phases, passes, steps = schedule(cfg, 40)  # 5 steps an epoch, 3 epochs: 15 steps
    assert (steps, passes, [p.epochs for p in phases]) == (15, 7, [1, 2])  # 7 passes an epoch: 105 steps
    assert schedule(cfg, 400)[1] == 1
    _, train, valid, _ = read_splits(cfg)  # 200 rows: 10 % would be 20 to choose on
    assert (len(train), len(valid)) == (150, 50)


@pytest.mark.parametrize("sets, message", [
    (["model.blend=1.5"], "model.blend"),
    (["model.blend=0.3", "data.baseline=false"], "model.blend"),
    (["data.task=regression", "data.label_col=label", "data.unlabelled=[x.txt]"], "single-label only"),
])
def test_few_label_settings_that_cannot_work_are_refused(cli, chain, sets, message):
    args = [a for s in [f"data.train={chain['train']}", f"init.from_run={chain['ft']}", *sets] for a in ("--set", s)]
    res = cli("train-clf", "-c", TINY, *args, "--print-config")
    assert res.exit_code == 2 and message in res.output


def test_self_training_without_unlabelled_texts_is_refused_before_training(cli, chain, tmp_path):
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set",
              f"init.from_run={chain['ft']}", "--set", "train.self_training_rounds=2", "--run-dir", tmp_path / "r")
    assert res.exit_code == 2 and "no unlabelled texts" in res.output and "data.extra_text" in res.output
    assert not (tmp_path / "r").exists() and not (tmp_path / ".r.partial").exists()


# ---------------------------------------------------------------- the learning curve
def test_curve_refuses_what_it_cannot_draw(cli, chain, tmp_path):
    base = ["-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={chain['ft']}"]
    res = cli("curve", *base, "--sizes", "10,ten", "--run-dir", tmp_path / "c")
    assert res.exit_code == 2 and "'ten'" in res.output
    res = cli("curve", *base, "--sizes", "10", "--run-dir", tmp_path / "c")
    assert res.exit_code == 2 and "needs data.test" in res.output


def test_curve_finishes_resumes_after_a_kill_and_its_baseline_is_train_clfs(cli, chain, tmp_path):
    out = tmp_path / "curve"
    sets = [f"data.train={chain['train']}", f"data.test={chain['test']}", f"init.from_run={chain['ft']}", STAGES,
            "train.min_steps=null"]  # a subprocess: not the tests' defaults (conftest)
    args = ["-c", str(TINY), *(a for s in sets for a in ("--set", s)), "--sizes", "20,60", "--seeds", "2",
            "--run-dir", str(out)]
    sigkill_after_first_row(["curve", *args], out / "curve.csv", "point")  # during the second point
    first = pd.read_csv(out / "curve.csv")
    res = cli("curve", "--run-dir", out, "--resume")
    assert res.exit_code == 0, res.output
    assert f"{len(first)} of 4 point(s) already done" in res.output
    table = pd.read_csv(out / "curve.csv")
    assert sorted(zip(table["size"], table["seed"])) == [(20, 0), (20, 1), (60, 0), (60, 1)]
    pd.testing.assert_frame_equal(table.iloc[:len(first)], first)  # the points done were kept, not retrained
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG" and not (out / "points").exists()
    summary = (out / "summary.md").read_text()
    assert "| 20 | 2 |" in summary and "The last doubling" in summary and "overtake" in summary
    # a point's rows, trained by train-clf itself: the same baseline figures
    row = table[(table["size"] == 20) & (table["seed"] == 1)].iloc[0]
    rows = pd.read_csv(out / "samples" / "n20-s1.csv")
    assert len(rows) == 20 and set(rows["label"]) == {"neg", "pos"}  # stratified
    r = api.train("train-clf", [TINY], [f"data.train={out / 'samples' / 'n20-s1.csv'}",
                                        f"data.valid={out / 'samples' / 'valid.csv'}",
                                        f"data.test={out / 'samples' / 'test.csv'}", f"init.from_run={chain['ft']}",
                                        STAGES], run_dir=tmp_path / "point")
    assert r["baseline_test_accuracy"] == pytest.approx(row["baseline_test_accuracy"])
    assert r["baseline_valid_accuracy"] == pytest.approx(row["baseline_valid_accuracy"])
    assert json.loads((out / "curve.json").read_text()) == {"sizes": [20, 60], "seeds": 2}
