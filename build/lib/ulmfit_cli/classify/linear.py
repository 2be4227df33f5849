"""A fitted TF-IDF + linear baseline (`classify.baseline` fits it) as arrays, saved and loaded without pickle,
and its outputs: what a blend mixes in, in training, after loading, and in the runtime without torch.

It is saved as JSON (the vectorizers' settings and vocabularies) and a NumPy `.npz` (idf weights,
coefficients, intercepts, loaded with `allow_pickle=False`), and its outputs are computed from those arrays
(`Outputs.linear_apply`) both in training and after loading, so a rebuilt baseline gives the same
probabilities. Not skops or joblib: a pickle-free format needs only these arrays, and the linear function
over them is one line.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse

from ulmfit_cli.classify.outputs import OUTPUTS, Outputs
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import atomic_write, read_json, write_json
from ulmfit_cli.layout import BASELINE, BASELINE_ARRAYS

# the two vectorizers' settings (TfidfVectorizer keyword arguments), word n-grams first
VECTORIZERS = ({"ngram_range": [1, 2], "sublinear_tf": True},
               {"analyzer": "char_wb", "ngram_range": [2, 5], "sublinear_tf": True, "min_df": 2})
FORMAT = 1


def vectorizer(settings: dict):
    """scikit-learn's TfidfVectorizer with these settings (imported here: the runtime of a model without a
    blend starts without scikit-learn)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    return TfidfVectorizer(**{**settings, "ngram_range": tuple(settings["ngram_range"])})


class LinearBaseline:
    """A fitted TF-IDF + linear model: the vectorizers, and one row of coefficients and an intercept per
    output; `outputs(texts)` is shaped as the classifier's (probabilities per class or label, or the
    numbers)."""

    def __init__(self, task: Outputs, vectorizers: list, coef: np.ndarray,
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
        if not (isinstance(meta, dict) and meta.get("format") == FORMAT and meta.get("task") in OUTPUTS
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
            vec = vectorizer(v["settings"])
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
        return cls(OUTPUTS[meta["task"]], vecs, coef, intercept, str(meta.get("name")), meta.get("setting"),
                   None if y_range is None else tuple(y_range))


def _terms(vectorizer) -> list[str]:
    """The vocabulary as a list, position = feature index."""
    terms = [""] * len(vectorizer.vocabulary_)
    for term, j in vectorizer.vocabulary_.items():
        terms[j] = term
    return terms
