"""The baseline a user would try first, beside every classifier: TF-IDF (word 1-2 grams and character
2-5 grams) + logistic regression (one per label for multi-label; ridge regression for a numeric
target), with scikit-learn.

train-clf fits it on the same training split, picks C (alpha for ridge) on the same validation split and
scores it on the same validation and test sets as the classifier (`data.baseline: false` turns it off), so
results.json answers "is this better than a bag of words?" from one run; the classifier's blend
(`classify.blend`) mixes its outputs in. Seconds on a CPU for sets of the size ULMFiT is used on.

The fitted baseline is a `classify.linear.LinearBaseline`, saved without pickle.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from ulmfit_cli.classify.linear import VECTORIZERS, LinearBaseline, Tfidf
from ulmfit_cli.classify.pairs import members
from ulmfit_cli.classify.scoring import headline, score
from ulmfit_cli.classify.splits import read_splits
from ulmfit_cli.classify.task import SINGLE_LABEL, Task
from ulmfit_cli.config import ClassifierConfig
from ulmfit_cli.console import info
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.layout import BUNDLE, CLASSIFIER, CLASSIFIER_STAGE
from ulmfit_cli.runs import read_run


def vectorizer(settings: dict) -> TfidfVectorizer:
    return TfidfVectorizer(**{**settings, "ngram_range": tuple(settings["ngram_range"])})


def tfidf_baseline(train: tuple[list[str], np.ndarray], valid: tuple[list[str], np.ndarray],
                   test: tuple[list[str], np.ndarray] | None, labels: list[str], task: Task = SINGLE_LABEL,
                   threshold: float | None = None, y_range: tuple[float, float] | None = None,
                   ) -> tuple[dict, LinearBaseline, dict[str, np.ndarray]]:
    """(`baseline_*` figures, the fitted `LinearBaseline`, its outputs on valid and test): the task's
    headline figures on valid and test, the setting picked on valid and the seconds; each (texts, targets)
    pair scored as `ulmfit evaluate` scores the classifier; multi-label thresholds are chosen on valid as
    the classifier's are (or `threshold`); regression numbers are clipped into `y_range` (model.y_range).
    The task's linear model (`Task.linear_fits`: logistic
    regression, one per label for multi-label, ridge for numbers) is fitted along its regularization path,
    and the setting with the best `task.selection` on valid is kept."""
    t0 = time.perf_counter()
    # one vocabulary for every setting
    vecs = [Tfidf.of(vectorizer(s).fit(train[0]), dict(s)) for s in VECTORIZERS]
    base = LinearBaseline(task, vecs, np.zeros((0, 0)), np.zeros(0), task.baseline_name, 0.0, y_range)
    x_train = base.features(train[0])
    splits = {"valid": valid, **({"test": test} if test is not None else {})}
    xs = {name: (base.features(texts), ys) for name, (texts, ys) in splits.items()}
    sign = -1 if task.lower_is_better(task.selection) else 1
    best = None
    for setting, model in task.linear_fits(x_train, train[1]):
        base.coef, base.intercept = task.linear_state(model, len(labels))  # copies: a warm start refits model
        outputs = {name: base.outputs_of_features(x) for name, (x, _) in xs.items()}
        _, figures = score(lambda o: o, {n: (outputs[n], y) for n, (_, y) in xs.items()}, task, labels,
                           fixed=threshold)
        value = figures["valid"][task.selection] * sign
        if best is None or value > best[0]:  # ties: the earlier, stronger regularization
            best = (value, setting, figures, outputs, (base.coef, base.intercept))
    _, setting, figures, outputs, (base.coef, base.intercept) = best
    base.setting = setting
    out = {"baseline": task.baseline_name, f"baseline_{task.baseline_setting}": setting,
           # the splits' sizes are the classifier's
           **headline(task, figures, prefix="baseline_", sizes=False)}
    out["baseline_seconds"] = round(time.perf_counter() - t0, 1)
    return out, base, outputs


def baseline_of_run(run_dir: Path, texts: list[str], targets: np.ndarray, labels: list[str]) -> dict | None:
    """`ulmfit evaluate`'s baseline: refit on the training split of train-clf run `run_dir` (read again from
    its config, split as it was) and scored on `texts`; None for a bundle, or (with the reason printed) when
    the run turned it off or its training files are gone."""
    run_dir = (members(run_dir) or [run_dir])[0]  # a pair's members share their splits
    if (run_dir / BUNDLE).is_file():
        return None  # a bundle has no training data
    cfg = read_run(run_dir, "--model", (CLASSIFIER_STAGE,), CLASSIFIER).typed(ClassifierConfig)
    if not cfg.data.baseline:
        return None
    try:
        _, train, valid, _ = read_splits(cfg, with_test=False)
    except UlmfitError as e:
        info(f"baseline: not refitted ({e})")
        return None
    pairs = [(p["text"].tolist(), cfg.task.targets(labels, p)) for p in (train, valid)]
    figures, _, _ = tfidf_baseline(*pairs, (texts, targets), labels, cfg.task, cfg.model.threshold,
                                   cfg.model.y_range)
    head = {k[len("baseline_test_"):]: v for k, v in figures.items() if k.startswith("baseline_test_")}
    return {"name": figures["baseline"], "fit_on": f"the training split of {run_dir}", **head,
            "seconds": figures["baseline_seconds"]}
