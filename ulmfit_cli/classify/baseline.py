"""The baseline a user would try first, beside every classifier: TF-IDF (word 1-2 grams and character
2-5 grams) + logistic regression (one per label for multi-label; ridge regression for a numeric
target), with scikit-learn.

train-clf fits it on the same training split, picks C (alpha for ridge) on the same validation split and
scores it on the same validation and test sets as the classifier (`data.baseline: false` turns it off), so
results.json answers "is this better than a bag of words?" from one run. Seconds on a CPU for sets of the size
ULMFiT is used on.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_union

from ulmfit_cli.classify.pairs import members
from ulmfit_cli.classify.scoring import headline, score
from ulmfit_cli.classify.splits import read_splits
from ulmfit_cli.classify.task import SINGLE_LABEL, Task
from ulmfit_cli.config import ClassifierConfig
from ulmfit_cli.console import info
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.layout import BUNDLE, CLASSIFIER, CLASSIFIER_STAGE
from ulmfit_cli.runs import read_run

def _features():
    return make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                      TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2))


def tfidf_baseline(train: tuple[list[str], np.ndarray], valid: tuple[list[str], np.ndarray],
                   test: tuple[list[str], np.ndarray] | None, labels: list[str], task: Task = SINGLE_LABEL,
                   threshold: float | None = None) -> dict:
    """`baseline_*` figures (the task's headline figures on valid and test; the setting picked on valid;
    seconds), each (texts, targets) pair scored as `ulmfit evaluate` scores the classifier; multi-label
    thresholds are chosen on valid as the classifier's are (or `threshold`). The task's linear model
    (`Task.linear_fits`: logistic regression, one per label for multi-label, ridge for numbers) is fitted
    along its regularization path, and the setting with the best `task.selection` on valid is kept."""
    t0 = time.perf_counter()
    features = _features().fit(train[0])  # one vocabulary for every setting: the features are computed once
    x_train = features.transform(train[0])
    splits = {"valid": valid, **({"test": test} if test is not None else {})}
    xs = {name: (features.transform(texts), ys) for name, (texts, ys) in splits.items()}
    sign = -1 if task.lower_is_better(task.selection) else 1
    best = None
    for setting, model in task.linear_fits(x_train, train[1]):
        _, figures = score(lambda x: task.linear_outputs(model, x, len(labels)), xs, task, labels,
                           fixed=threshold)
        value = figures["valid"][task.selection] * sign
        if best is None or value > best[0]:  # ties: the earlier, stronger regularization
            best = (value, setting, figures)
    _, setting, figures = best
    out = {"baseline": task.baseline_name, f"baseline_{task.baseline_setting}": setting,
           # the splits' sizes are the classifier's
           **headline(task, figures, prefix="baseline_", sizes=False)}
    out["baseline_seconds"] = round(time.perf_counter() - t0, 1)
    return out


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
    figures = tfidf_baseline(*pairs, (texts, targets), labels, cfg.task, cfg.model.threshold)
    head = {k[len("baseline_test_"):]: v for k, v in figures.items() if k.startswith("baseline_test_")}
    return {"name": figures["baseline"], "fit_on": f"the training split of {run_dir}", **head,
            "seconds": figures["baseline_seconds"]}
