"""What a task makes of a model's outputs, in NumPy alone: the decision (a class, a label set, a number), how
`predict` writes it, the baseline's linear outputs, what an explanation scores, and what evaluate's report
page shows (calibration, the texts it picks). The runtime of an exported model (no torch, no fastai)
uses these; `classify.task`'s Task objects, which add training's side, inherit them, so the three kinds still
differ only in these two modules.
"""
from __future__ import annotations

import numpy as np

MULTI_DELIM = ";"  # how `ulmfit predict` writes a predicted label set when the model was trained on columns


SHOWN = 10  # texts per table of evaluate's report page


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict:
    """A reliability diagram's bins (equal width over [0, 1]) and the expected calibration error: the mean
    over bins of |accuracy - mean confidence|, weighted by the bin's share of the texts (Guo et al. 2017)."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            conf, acc = float(confidence[inside].mean()), float(correct[inside].mean())
            ece += inside.mean() * abs(acc - conf)
            out.append({"low": b / bins, "high": (b + 1) / bins, "n": int(inside.sum()), "confidence": conf,
                        "accuracy": acc})
    return {"ece": float(ece), "bins": out}


class Outputs:
    """A task's outputs side; one instance per kind (`OUTPUTS`), or its Task (`classify.task.TASKS`)."""
    name = ""
    least_labels = 1      # labels.json entries a model of this task has at least
    thresholded = False   # decided by per-label thresholds (thresholds.json, model.threshold)
    by_magnitude = False  # an explanation's best tokens are those of largest |score| (no class to speak for)
    ranked_by = ""        # what evaluate's report page sorts its texts by

    def decide(self, outputs: np.ndarray, labels: list[str], thresholds) -> list:
        """What the outputs predict: the likeliest class, the tuple of labels at or above their thresholds, or
        the number."""
        raise NotImplementedError

    def written(self, predicted: list, delim: str | None) -> list:
        """Predictions as `ulmfit predict` writes them in its `prediction` column."""
        return predicted

    def probability_columns(self) -> bool:
        """Whether `ulmfit predict` writes a `prob_<label>` column per output."""
        return True

    def linear_apply(self, z: np.ndarray) -> np.ndarray:
        """The linear model's outputs from its scores `x @ coef.T + intercept`, shaped as the classifier's
        (what `figures` reads): probabilities per class or label, or the numbers."""
        raise NotImplementedError

    def linear_gradient(self, z: np.ndarray, coef: np.ndarray, j: int) -> np.ndarray:
        """The gradient of output `j` of `linear_apply` at one text's scores `z` (C,), for the features whose
        coefficient columns are `coef` (C, F): what the baseline's attributions integrate."""
        raise NotImplementedError

    def explained(self, row: np.ndarray, predicted, labels: list[str]) -> list[int]:
        """The outputs an explanation scores by default: the predicted class, each predicted label (none: the
        likeliest), the number."""
        raise NotImplementedError

    def reliability(self, outputs: np.ndarray, targets: np.ndarray, labels: list[str]) -> dict | None:
        """report.json's calibration (`calibration`), or None where there is no probability."""
        return None

    def shown(self, outputs: np.ndarray, targets: np.ndarray, labels: list[str], thresholds) -> dict:
        """The texts evaluate's page shows, by section title: rows of (text row, output explained, truth,
        prediction, the `ranked_by` figure)."""
        raise NotImplementedError


class SingleLabelOutputs(Outputs):
    name = "single_label"
    least_labels = 2
    ranked_by = "confidence"

    def decide(self, outputs, labels, thresholds) -> list:
        return [labels[i] for i in outputs.argmax(1)]

    def linear_apply(self, z):
        e = np.exp(z - z.max(axis=1, keepdims=True))  # scipy.special.softmax's formula, without scipy
        return e / e.sum(axis=1, keepdims=True)

    def linear_gradient(self, z, coef, j):
        p = self.linear_apply(z[None])[0]
        return p[j] * (coef[j] - p @ coef)  # the softmax's Jacobian row j, times the coefficients

    def explained(self, row, predicted, labels):
        return [int(row.argmax())]

    def reliability(self, outputs, targets, labels):
        return calibration(outputs.max(1), outputs.argmax(1) == targets)  # the top class's confidence

    def shown(self, outputs, targets, labels, thresholds):
        pred, conf = outputs.argmax(1), outputs.max(1)
        wrong, right = np.flatnonzero(pred != targets), np.flatnonzero(pred == targets)
        wrong = wrong[np.argsort(-conf[wrong], kind="stable")]
        right = right[np.argsort(conf[right], kind="stable")]

        def row(i):
            return int(i), int(pred[i]), labels[targets[i]], labels[pred[i]], float(conf[i])
        return {"Most confident errors": [row(i) for i in wrong[:SHOWN]],
                "Least confident correct": [row(i) for i in right[:SHOWN]]}


class MultiLabelOutputs(Outputs):
    name = "multi_label"
    thresholded = True
    ranked_by = "probability"

    def decide(self, outputs, labels, thresholds) -> list:
        on = outputs >= thresholds[None, :]
        return [tuple(lbl for lbl, o in zip(labels, row) if o) for row in on]

    def written(self, predicted, delim) -> list:
        return [(delim or MULTI_DELIM).join(p) for p in predicted]

    def linear_apply(self, z):
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic sigmoid, without overflow (and without scipy)

    def linear_gradient(self, z, coef, j):
        p = self.linear_apply(z[j])
        return p * (1 - p) * coef[j]

    def explained(self, row, predicted, labels):
        return [labels.index(lbl) for lbl in predicted] or [int(row.argmax())]

    def reliability(self, outputs, targets, labels):
        return {lbl: calibration(outputs[:, j], targets[:, j]) for j, lbl in enumerate(labels)}

    def shown(self, outputs, targets, labels, thresholds):
        cut = np.asarray(thresholds)[None, :]
        on = outputs >= cut
        rows, cols = np.nonzero(on != targets.astype(bool))
        order = np.argsort(-np.abs(outputs - cut)[rows, cols], kind="stable")[:SHOWN]
        yes = {True: "yes", False: "no"}
        return {"Most confident wrong decisions (text, label)": [
            (int(r), int(c), f"{labels[c]}: {yes[bool(targets[r, c])]}", yes[bool(on[r, c])],
             float(outputs[r, c]))
            for r, c in zip(rows[order], cols[order])]}


class RegressionOutputs(Outputs):
    name = "regression"
    by_magnitude = True
    ranked_by = "error"

    def decide(self, outputs, labels, thresholds) -> list:
        return outputs[:, 0].tolist()

    def probability_columns(self) -> bool:
        return False

    def linear_apply(self, z):
        return z

    def linear_gradient(self, z, coef, j):
        return coef[j]  # y_range's clipping left out: it has no gradient inside the range

    def explained(self, row, predicted, labels):
        return [0]

    def shown(self, outputs, targets, labels, thresholds):
        pred = outputs[:, 0]
        res = np.abs(pred - targets)

        def row(i):
            return int(i), 0, f"{targets[i]:.3f}", f"{pred[i]:.3f}", float(pred[i] - targets[i])
        return {"Largest errors": [row(i) for i in np.argsort(-res, kind="stable")[:SHOWN]],
                "Closest predictions": [row(i) for i in np.argsort(res, kind="stable")[:SHOWN]]}


OUTPUTS: dict[str, Outputs] = {o.name: o for o in (SingleLabelOutputs(), MultiLabelOutputs(),
                                                    RegressionOutputs())}
