"""A fitted TF-IDF + linear baseline (`classify.baseline` fits it) as arrays, saved and loaded without pickle,
and its outputs: what a blend mixes in, in training, after loading, and in the runtime without torch.

It is saved as JSON (the vectorizers' settings and vocabularies) and a NumPy `.npz` (idf weights,
coefficients, intercepts, loaded with `allow_pickle=False`), and its outputs are computed from those arrays
(`Outputs.linear_apply`) both in training and after loading, so a rebuilt baseline gives the same
probabilities. Not skops or joblib: a pickle-free format needs only these arrays, and the linear function
over them is one line.

scikit-learn's `TfidfVectorizer` fits the vocabularies and idf weights; turning a text into its TF-IDF
features is `Tfidf`, the two analyzers the baseline uses (word 1-2 grams, char_wb 2-5 grams) with sublinear
tf and l2 norm, in NumPy: importing scikit-learn was 87 MB and 0.6 s of the runtime's start, and its
per-call checks 1.5 ms of a single text's prediction. A test holds `Tfidf` to scikit-learn's `transform` on
real text.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from ulmfit_cli.classify.outputs import OUTPUTS, Outputs
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import atomic_write, read_json, write_json
from ulmfit_cli.layout import BASELINE, BASELINE_ARRAYS

# the two vectorizers' settings (TfidfVectorizer keyword arguments), word n-grams first
VECTORIZERS = ({"ngram_range": [1, 2], "sublinear_tf": True},
               {"analyzer": "char_wb", "ngram_range": [2, 5], "sublinear_tf": True, "min_df": 2})
FORMAT = 1


_WORD = re.compile(r"(?u)\b\w\w+\b")  # TfidfVectorizer's default token_pattern
_SPACES = re.compile(r"\s\s+")          # its char_wb analyzer's white-space normalisation


class Tfidf:
    """A fitted TfidfVectorizer's `transform` for VECTORIZERS' settings: lower-cased text, word n-grams
    (scikit-learn's `_word_ngrams`) or char n-grams inside word boundaries (`_char_wb_ngrams`), counted over
    the fitted vocabulary, tf = 1 + log(count), times idf, each row scaled to unit l2 norm."""

    def __init__(self, settings: dict, vocabulary: dict[str, int], idf: np.ndarray):
        self.settings, self.vocabulary, self.idf = settings, vocabulary, np.asarray(idf, dtype=np.float64)
        self.min_n, self.max_n = settings["ngram_range"]
        self.chars = settings.get("analyzer") == "char_wb"

    @classmethod
    def of(cls, fitted, settings: dict) -> "Tfidf":
        """From a fitted scikit-learn TfidfVectorizer (`classify.baseline` fits them)."""
        return cls(settings, dict(fitted.vocabulary_), fitted.idf_)

    def terms(self) -> list[str]:
        """The vocabulary as a list, position = feature index (built once)."""
        if getattr(self, "_terms", None) is None:
            self._terms = [""] * len(self.vocabulary)
            for term, j in self.vocabulary.items():
                self._terms[j] = term
        return self._terms

    def grams(self, text: str) -> list[str]:
        text, out = text.lower(), []
        if self.chars:
            for w in _SPACES.sub(" ", text).split():
                w = f" {w} "
                for n in range(self.min_n, self.max_n + 1):
                    out.extend(w[i:i + n] for i in range(max(len(w) - n + 1, 1)))
                    if len(w) <= n:  # a short word counts once
                        break
            return out
        words = _WORD.findall(text)
        for n in range(self.min_n, min(self.max_n, len(words)) + 1):
            out.extend(words if n == 1 else (" ".join(words[i:i + n]) for i in range(len(words) - n + 1)))
        return out

    def row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The text's features: their indices and TF-IDF values."""
        counts = Counter(j for j in map(self.vocabulary.get, self.grams(text)) if j is not None)
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        val = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        if self.settings.get("sublinear_tf"):
            val = np.log(val) + 1.0
        val *= self.idf[idx]
        norm = np.sqrt(val @ val)
        return idx, (val / norm if norm > 0 else val)


class LinearBaseline:
    """A fitted TF-IDF + linear model: the vectorizers, and one row of coefficients and an intercept per
    output; `outputs(texts)` is shaped as the classifier's (probabilities per class or label, or the
    numbers)."""

    def __init__(self, task: Outputs, vectorizers: list[Tfidf], coef: np.ndarray,
                 intercept: np.ndarray, name: str, setting: float,
                 y_range: tuple[float, float] | None = None):
        self.task, self.vectorizers, self.coef, self.intercept = task, vectorizers, coef, intercept
        self.name, self.setting = name, setting
        self.y_range = y_range  # regression: numbers kept in model.y_range, as the classifier's are
        self.offsets = np.cumsum([0] + [len(v.vocabulary) for v in vectorizers])  # each one's first column

    def rows(self, texts: list[str]):
        """Each text's (feature indices, values) over all vectorizers' columns."""
        for text in texts:
            parts = [v.row(text) for v in self.vectorizers]
            yield (np.concatenate([idx + off for (idx, _), off in zip(parts, self.offsets)]),
                   np.concatenate([val for _, val in parts]))

    def features(self, texts: list[str]):
        """The texts' features as a scipy CSR matrix, what scikit-learn's linear models fit on."""
        import scipy.sparse  # training's; the runtime computes outputs row by row
        rows = list(self.rows(texts))
        indptr = np.cumsum([0] + [len(idx) for idx, _ in rows])
        return scipy.sparse.csr_matrix(
            (np.concatenate([val for _, val in rows] or [np.zeros(0)]),
             np.concatenate([idx for idx, _ in rows] or [np.zeros(0, dtype=np.int64)]), indptr),
            shape=(len(rows), int(self.offsets[-1])))

    def outputs_of_features(self, x) -> np.ndarray:
        return self._apply(np.asarray(x @ self.coef.T))

    def outputs(self, texts: list[str]) -> np.ndarray:
        scores = np.array([self.coef[:, idx] @ val for idx, val in self.rows(texts)]).reshape(
            -1, self.coef.shape[0])
        return self._apply(scores)

    def attributions(self, text: str, j: int, alphas: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Output `j`'s attribution to each feature of `text`: the features' values times the output's
        gradient averaged over the path `alphas` x features (Integrated Gradients from all-zero features, on
        the same scale as the classifier's; `alphas` [1.0]: gradient x input). The terms name the features:
        word n-grams as they are, character n-grams quoted."""
        idx, val = next(self.rows([text]))
        coef = self.coef[:, idx]
        scores = coef @ val
        grad = np.mean([self.task.linear_gradient(a * scores + self.intercept, coef, j) for a in alphas], 0)
        return [self._term(i) for i in idx], val * grad

    def _term(self, i: int) -> str:
        v = int(np.searchsorted(self.offsets, i, side="right") - 1)
        vec = self.vectorizers[v]
        term = vec.terms()[i - self.offsets[v]]
        return repr(term) if vec.chars else term

    def _apply(self, scores: np.ndarray) -> np.ndarray:
        out = self.task.linear_apply(scores + self.intercept)
        return out if self.y_range is None else np.clip(out, *self.y_range)

    def save(self, folder: Path) -> None:
        """baseline.json and baseline.npz in `folder`."""
        meta = {"format": FORMAT, "task": self.task.name, "name": self.name, "setting": self.setting,
                "y_range": None if self.y_range is None else list(self.y_range),
                "vectorizers": [{"settings": v.settings, "vocabulary": v.terms()} for v in self.vectorizers]}
        write_json(folder / BASELINE, meta)
        arrays = {"coef": self.coef, "intercept": self.intercept,
                  **{f"idf_{i}": v.idf for i, v in enumerate(self.vectorizers)}}
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
            vecs.append(Tfidf(v["settings"], {t: j for j, t in enumerate(v["vocabulary"])}, idf))
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
