"""The baseline a user would try first, beside every classifier: TF-IDF (word 1-2 grams and character
2-5 grams) + logistic regression, with scikit-learn.

train-clf fits it on the same training split, picks C on the same validation split and scores it on the
same validation and test sets as the classifier (`data.baseline: false` turns it off), so results.json
answers "is this better than a bag of words?" from one run. Seconds on a CPU for sets of the size
ULMFiT is used on.
"""
from __future__ import annotations

import time

import numpy as np

C_GRID = (1.0, 10.0, 100.0)


def _features():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union
    return make_union(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                      TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2))


def tfidf_baseline(train: tuple[list[str], np.ndarray], valid: tuple[list[str], np.ndarray],
                   test: tuple[list[str], np.ndarray] | None, labels: list[str]) -> dict:
    """`baseline_*` figures (accuracy, macro-F1 on valid and test; the C picked; seconds), each
    (texts, class indices) pair scored as `ulmfit evaluate` scores the classifier."""
    from sklearn.linear_model import LogisticRegression

    from ulmfit_cli.inference.evaluation import scores
    t0 = time.perf_counter()
    features = _features().fit(train[0])  # one vocabulary for every C: the features are computed once
    x_train = features.transform(train[0])
    splits = {"valid": valid, **({"test": test} if test is not None else {})}
    xs = {name: features.transform(texts) for name, (texts, _) in splits.items()}
    # C ascending, each fit starting from the last one's weights: the path costs about one cold fit
    model = LogisticRegression(max_iter=3000, warm_start=True)
    preds = {}
    for c in C_GRID:
        model.set_params(C=c).fit(x_train, train[1])
        preds[c] = {name: model.predict(x) for name, x in xs.items()}
    valid_acc = {c: float((p["valid"] == np.asarray(valid[1])).mean()) for c, p in preds.items()}
    best = max(C_GRID, key=lambda c: (valid_acc[c], -c))  # ties: the stronger regularization
    out = {"baseline": "tfidf-logreg", "baseline_C": best}
    for name, (_, ys) in splits.items():
        figures = scores(np.asarray(ys), preds[best][name], labels)
        out.update({f"baseline_{name}_{k}": figures[k] for k in ("accuracy", "macro_f1")})
    out["baseline_seconds"] = round(time.perf_counter() - t0, 1)
    return out
