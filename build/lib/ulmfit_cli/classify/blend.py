"""The classifier blended with the baseline: `w * classifier + (1 - w) * baseline` outputs (probabilities,
or numbers for regression), with `w` chosen on the validation split (`model.blend: auto`) from a grid in
[0, 1]: w = 1 is the classifier alone, w = 0 the baseline alone. The two make different mistakes (a word
n-gram model and an LSTM), so a mix often beats both, most of all with few labels. Multi-label thresholds
are chosen again on the validation split for the mixed probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = np.round(np.linspace(0.0, 1.0, 21), 2)  # steps of 0.05


def mix(weight: float, classifier: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    return weight * classifier + (1.0 - weight) * baseline


@dataclass(frozen=True)
class Choice:
    weight: float
    thresholds: np.ndarray | None  # a multi-label blend's per-label thresholds
    value: float                   # the validation figure (the task's `selection`) at `weight`


def choose_weight(task, labels: list[str], y_valid: np.ndarray, classifier: np.ndarray, baseline: np.ndarray,
                  fixed: float | None = None, weights=GRID) -> Choice:
    """The weight of `weights` whose mix has the best `task.selection` figure on the validation split; ties
    go to the lower loss (`task.output_loss`), then to the larger weight (more of the classifier).
    `fixed`: multi-label's model.threshold."""
    sign = -1 if task.lower_is_better(task.selection) else 1
    best = None
    for w in weights:
        out = mix(float(w), classifier, baseline)
        cuts = task.choose_thresholds(y_valid, out, fixed)
        value = task.figures(y_valid, out, labels, cuts)[task.selection]
        key = (sign * value, -task.output_loss(y_valid, out), w)
        if best is None or key > best[0]:
            best = (key, Choice(float(w), cuts, value))
    return best[1]
