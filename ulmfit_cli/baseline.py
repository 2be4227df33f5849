"""The baseline a user would try first, beside every classifier: TF-IDF (word 1-2 grams and character
2-5 grams) + logistic regression (one per label for multi-label; ridge regression for a numeric
target), with scikit-learn.

train-clf fits it on the same training split, picks C (alpha for ridge) on the same validation split and
scores it on the same validation and test sets as the classifier (`data.baseline: false` turns it off), so results.json
answers "is this better than a bag of words?" from one run. Seconds on a CPU for sets of the size
ULMFiT is used on.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ulmfit_cli.tasks import HEADLINE, MULTI, REGRESSION, SINGLE

C_GRID = (1.0, 10.0, 100.0)
ALPHA_GRID = (10.0, 1.0, 0.1)  # ridge, strongest first


def _features():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union
    return make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                      TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2))


def _fits(task: str, x_train, y_train):
    """(setting, fitted model) along the regularization path of the task's linear model: logistic regression
    (C ascending, each fit starting from the last one's weights: the path costs about one cold fit), one per
    label for multi-label (scikit-learn's OneVsRestClassifier), ridge regression for numbers."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier
    if task == REGRESSION:
        for alpha in ALPHA_GRID:
            yield alpha, Ridge(alpha=alpha).fit(x_train, y_train)
        return
    if task == MULTI:
        for c in C_GRID:
            yield c, OneVsRestClassifier(LogisticRegression(C=c, max_iter=3000)).fit(x_train, y_train)
        return
    model = LogisticRegression(max_iter=3000, warm_start=True)
    for c in C_GRID:
        yield c, model.set_params(C=c).fit(x_train, y_train)


def _outputs(task: str, model, x):
    """Class ids (single-label: `predict`, as a class absent from training has no probability column),
    probabilities per label, or numbers."""
    return model.predict_proba(x) if task == MULTI else model.predict(x)


def tfidf_baseline(train: tuple[list[str], np.ndarray], valid: tuple[list[str], np.ndarray],
                   test: tuple[list[str], np.ndarray] | None, labels: list[str], task: str = SINGLE,
                   threshold: float | None = None) -> dict:
    """`baseline_*` figures (the task's headline figures on valid and test; the setting picked on valid;
    seconds), each (texts, targets) pair scored as `ulmfit evaluate` scores the classifier; multi-label
    thresholds are chosen on valid as the classifier's are (or `threshold`)."""
    from ulmfit_cli.inference.evaluation import choose_thresholds, scores, task_scores
    t0 = time.perf_counter()
    features = _features().fit(train[0])  # one vocabulary for every setting: the features are computed once
    x_train = features.transform(train[0])
    splits = {"valid": valid, **({"test": test} if test is not None else {})}
    xs = {name: features.transform(texts) for name, (texts, _) in splits.items()}
    key = {SINGLE: "accuracy", MULTI: "micro_f1", REGRESSION: "rmse"}[task]  # what picks the setting on valid
    best = None
    for setting, model in _fits(task, x_train, train[1]):
        outs = {name: _outputs(task, model, x) for name, x in xs.items()}
        cuts = choose_thresholds(np.asarray(valid[1]), outs["valid"], threshold) if task == MULTI else None
        figures = {name: scores(np.asarray(ys), outs[name], labels) if task == SINGLE  # predict(): class ids
                   else task_scores(task, np.asarray(ys), outs[name], labels, cuts) for name, (_, ys) in splits.items()}
        score = figures["valid"][key] * (-1 if task == REGRESSION else 1)
        if best is None or score > best[0]:  # ties: the earlier, stronger regularization
            best = (score, setting, figures)
    _, setting, figures = best
    out = {"baseline": "tfidf-ridge" if task == REGRESSION else "tfidf-logreg",
           f"baseline_{'alpha' if task == REGRESSION else 'C'}": setting}
    for name, fig in figures.items():
        out.update({f"baseline_{name}_{k}": fig[k] for k in HEADLINE[task]})
    out["baseline_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def baseline_of_run(run_dir: Path, texts: list[str], targets: np.ndarray, labels: list[str]) -> dict | None:
    """`ulmfit evaluate`'s baseline: refit on the training split of train-clf run `run_dir` (read again from
    its config, split as it was) and scored on `texts`; None for a bundle, or (with the reason printed) when
    the run turned it off or its training files are gone."""
    from ulmfit_cli.config import ClassifierConfig
    from ulmfit_cli.console import info
    from ulmfit_cli.directions import members
    from ulmfit_cli.errors import UlmfitError
    from ulmfit_cli.runs import read_run
    from ulmfit_cli.stages.train_clf import read_splits
    from ulmfit_cli.tasks import encode_targets
    from ulmfit_cli.inference.classifier import BUNDLE_FILE
    run_dir = (members(run_dir) or [run_dir])[0]  # a pair's members share their splits
    if (run_dir / BUNDLE_FILE).is_file():
        return None  # a bundle has no training data
    cfg = read_run(run_dir, "--model", ("train-clf",), "model.pth").typed(ClassifierConfig)
    if not cfg.data.baseline:
        return None
    try:
        _, train, valid, _ = read_splits(cfg, with_test=False)
    except UlmfitError as e:
        info(f"baseline: not refitted ({e})")
        return None
    pairs = [(p["text"].tolist(), encode_targets(cfg.task, labels, p)) for p in (train, valid)]
    figures = tfidf_baseline(*pairs, (texts, targets), labels, cfg.task, cfg.model.threshold)
    head = {k[len("baseline_test_"):]: v for k, v in figures.items() if k.startswith("baseline_test_")}
    return {"name": figures["baseline"], "fit_on": f"the training split of {run_dir}", **head,
            "seconds": figures["baseline_seconds"]}
