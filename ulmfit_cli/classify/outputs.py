"""What a task makes of a model's outputs, in NumPy alone: the decision (a class, a label set, a number), how
`predict` writes it, and the baseline's linear outputs. The runtime of an exported model (no torch, no fastai)
uses these; `classify.task`'s Task objects, which add training's side, inherit them, so the three kinds still
differ only in these two modules.
"""
from __future__ import annotations

import numpy as np

MULTI_DELIM = ";"  # how `ulmfit predict` writes a predicted label set when the model was trained on columns


class Outputs:
    """A task's outputs side; one instance per kind (`OUTPUTS`), or its Task (`classify.task.TASKS`)."""
    name = ""
    least_labels = 1      # labels.json entries a model of this task has at least
    thresholded = False   # decided by per-label thresholds (thresholds.json, model.threshold)

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


class SingleLabelOutputs(Outputs):
    name = "single_label"
    least_labels = 2

    def decide(self, outputs, labels, thresholds) -> list:
        return [labels[i] for i in outputs.argmax(1)]

    def linear_apply(self, z):
        e = np.exp(z - z.max(axis=1, keepdims=True))  # scipy.special.softmax's formula, without scipy
        return e / e.sum(axis=1, keepdims=True)

    def linear_gradient(self, z, coef, j):
        p = self.linear_apply(z[None])[0]
        return p[j] * (coef[j] - p @ coef)  # the softmax's Jacobian row j, times the coefficients


class MultiLabelOutputs(Outputs):
    name = "multi_label"
    thresholded = True

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


class RegressionOutputs(Outputs):
    name = "regression"

    def decide(self, outputs, labels, thresholds) -> list:
        return outputs[:, 0].tolist()

    def probability_columns(self) -> bool:
        return False

    def linear_apply(self, z):
        return z

    def linear_gradient(self, z, coef, j):
        return coef[j]  # y_range's clipping left out: it has no gradient inside the range


OUTPUTS: dict[str, Outputs] = {o.name: o for o in (SingleLabelOutputs(), MultiLabelOutputs(),
                                                    RegressionOutputs())}
