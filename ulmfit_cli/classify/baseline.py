"""The baseline a user would try first, beside every classifier: TF-IDF (word 1-2 grams and character
2-5 grams) + logistic regression (one per label for multi-label; ridge regression for a numeric
target), with scikit-learn; and the fitted baseline kept without pickle (`LinearBaseline`).

train-clf fits it on the same training split, picks C (alpha for ridge) on the same validation split and
scores it on the same validation and test sets as the classifier (`data.baseline: false` turns it off), so
results.json answers "is this better than a bag of words?" from one run; the classifier's blend
(`classify.blend`) mixes its outputs in. Seconds on a CPU for sets of the size ULMFiT is used on.

A fitted baseline is saved as JSON (the vectorizers' settings and vocabularies) and a NumPy `.npz` (idf
weights, coefficients, intercepts, loaded with `allow_pickle=False`), and its outputs are computed from
those arrays (`Task.linear_apply`) both in training and after loading, so a rebuilt baseline gives the
same probabilities. Not skops or joblib: a pickle-free format needs only these arrays, and the linear
function over them is one line.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import scipy.sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from ulmfit_cli.classify.pairs import members
from ulmfit_cli.classify.scoring import headline, score
from ulmfit_cli.classify.splits import read_splits
from ulmfit_cli.classify.task import SINGLE_LABEL, TASKS, Task
from ulmfit_cli.config import ClassifierConfig
from ulmfit_cli.console import info
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import atomic_write, read_json, write_json
from ulmfit_cli.layout import BASELINE, BASELINE_ARRAYS, BUNDLE, CLASSIFIER, CLASSIFIER_STAGE
from ulmfit_cli.runs import read_run

# the two vectorizers' settings (TfidfVectorizer keyword arguments), word n-grams first
VECTORIZERS = ({"ngram_range": [1, 2], "sublinear_tf": True},
               {"analyzer": "char_wb", "ngram_range": [2, 5], "sublinear_tf": True, "min_df": 2})
FORMAT = 1


def _vectorizer(settings: dict) -> TfidfVectorizer:
    return TfidfVectorizer(**{**settings, "ngram_range": tuple(settings["ngram_range"])})


class LinearBaseline:
    """A fitted TF-IDF + linear model: the vectorizers, and one row of coefficients and an intercept per
    output; `outputs(texts)` is shaped as the classifier's (probabilities per class or label, or the
    numbers)."""

    def __init__(self, task: Task, vectorizers: list[TfidfVectorizer], coef: np.ndarray,
                 intercept: np.ndarray, name: str, setting: float,
                 y_range: tuple[float, float] | None = None):
        self.task, self.vectorizers, self.coef, self.intercept = task, vectorizers, coef, intercept
        self.name, self.setting = name, setting
        self.y_range = y_range  # regression: numbers kept in model.y_range, as the classifier's are

    def features(self, texts: list[str]):
        return scipy.sparse.hstack([v.transform(texts) for v in self.vectorizers]).tocsr()

    def outputs_of_features(self, x) -> np.ndarray:
        out = self.task.linear_apply(np.asarray(x @ self.coef.T) + self.intercept)
        return out if self.y_range is None else np.clip(out, *self.y_range)

    def outputs(self, texts: list[str]) -> np.ndarray:
        return self.outputs_of_features(self.features(list(texts)))

    def save(self, folder: Path) -> None:
        """baseline.json and baseline.npz in `folder`."""
        meta = {"format": FORMAT, "task": self.task.name, "name": self.name, "setting": self.setting,
                "y_range": None if self.y_range is None else list(self.y_range),
                "vectorizers": [{"settings": s, "vocabulary": _terms(v)}
                                for s, v in zip(VECTORIZERS, self.vectorizers)]}
        write_json(folder / BASELINE, meta)
        arrays = {"coef": self.coef, "intercept": self.intercept,
                  **{f"idf_{i}": v.idf_ for i, v in enumerate(self.vectorizers)}}
        atomic_write(folder / BASELINE_ARRAYS, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, folder: Path, key: str) -> "LinearBaseline":
        """The baseline saved in `folder`; anything that is not one names the file (no pickle is read)."""
        meta, npz = read_json(folder / BASELINE, key), folder / BASELINE_ARRAYS
        bad = UlmfitError(f"{key}: {folder / BASELINE} is not an ulmfit baseline (format {FORMAT})")
        if not (isinstance(meta, dict) and meta.get("format") == FORMAT and meta.get("task") in TASKS
                and isinstance(meta.get("vectorizers"), list)
                and [v.get("settings") if isinstance(v, dict) else None for v in meta["vectorizers"]]
                == [dict(s) for s in VECTORIZERS]
                and all(isinstance(v.get("vocabulary"), list)
                        and all(isinstance(t, str) for t in v["vocabulary"]) for v in meta["vectorizers"])):
            raise bad
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise UlmfitError(f"{key}: {npz} is damaged or not a NumPy .npz file ({e})") from None
        vecs = []
        for i, v in enumerate(meta["vectorizers"]):
            idf = arrays.get(f"idf_{i}")
            if idf is None or idf.shape != (len(v["vocabulary"]),):
                raise UlmfitError(f"{key}: {npz}: idf_{i} does not match the vocabulary in "
                                  f"{folder / BASELINE}")
            vec = _vectorizer(v["settings"])
            vec.vocabulary_ = {t: j for j, t in enumerate(v["vocabulary"])}
            vec.idf_ = idf
            vecs.append(vec)
        coef, intercept = arrays.get("coef"), arrays.get("intercept")
        width = sum(len(v["vocabulary"]) for v in meta["vectorizers"])
        if coef is None or intercept is None or coef.ndim != 2 or coef.shape[1] != width \
                or intercept.shape != (coef.shape[0],):
            raise UlmfitError(f"{key}: {npz}: coef/intercept do not match {width} features")
        y_range = meta.get("y_range")
        if y_range is not None and not (isinstance(y_range, list) and len(y_range) == 2
                                        and all(isinstance(v, (int, float)) for v in y_range)):
            raise bad
        return cls(TASKS[meta["task"]], vecs, coef, intercept, str(meta.get("name")), meta.get("setting"),
                   None if y_range is None else tuple(y_range))


def _terms(vectorizer: TfidfVectorizer) -> list[str]:
    """The vocabulary as a list, position = feature index."""
    terms = [""] * len(vectorizer.vocabulary_)
    for term, j in vectorizer.vocabulary_.items():
        terms[j] = term
    return terms


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
    vecs = [_vectorizer(s).fit(train[0]) for s in VECTORIZERS]  # one vocabulary for every setting
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
