"""The figures of every classifier task, for `ulmfit evaluate`, train-clf's results.json, a pair and the
baseline: `score` runs a model over its splits, each `Task.figures` picks its figures from here.

single_label: accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (and a PNG);
multi_label: micro and macro F1, subset accuracy, ROC-AUC and per-label figures at per-label decision
thresholds (chosen on the validation set by `choose_thresholds`); regression: MAE, RMSE, Pearson and
Spearman correlation."""
from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def class_scores(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Figures for integer class ids `y_true`/`y_pred` over `labels`."""
    idx = list(range(len(labels)))
    p, r, f, n = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)),
        "per_class": {lbl: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                            "support": int(n[i])}
                      for i, lbl in enumerate(labels)},
        "confusion": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=idx).tolist()},
    }


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def choose_thresholds(y_true: np.ndarray, probs: np.ndarray, fixed: float | None = None) -> np.ndarray:
    """One decision threshold per label: `fixed` for all, or the one of 0.05, 0.10, ... 0.95 with the best
    F1 of that label on (`y_true`, `probs`) (ties: the one nearest 0.5; a label never seen: 0.5)."""
    if fixed is not None:
        return np.full(probs.shape[1], fixed)
    out = np.full(probs.shape[1], 0.5)
    for j in range(probs.shape[1]):
        if not y_true[:, j].any():
            continue
        f1 = [f1_score(y_true[:, j], probs[:, j] >= t, zero_division=0) for t in THRESHOLD_GRID]
        out[j] = max(zip(f1, -abs(THRESHOLD_GRID - 0.5), THRESHOLD_GRID))[2]
    return out


def multi_scores(y_true: np.ndarray, probs: np.ndarray, labels: list[str], thresholds: np.ndarray) -> dict:
    """Figures of a multi-label task: 0/1 matrix `y_true` against probabilities cut at `thresholds`."""
    from sklearn.metrics import roc_auc_score
    y_true = np.asarray(y_true).astype(bool)
    y_pred = probs >= np.asarray(thresholds)[None, :]
    p, r, f, n = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    both = [j for j in range(len(labels)) if 0 < y_true[:, j].sum() < len(y_true)]  # AUC needs both classes
    return {
        "n": int(len(y_true)),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "subset_accuracy": float((y_true == y_pred).all(1).mean()),
        "roc_auc": float(roc_auc_score(y_true[:, both], probs[:, both], average="macro")) if both else None,
        "per_label": {lbl: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                            "support": int(n[i]), "threshold": float(thresholds[i])}
                      for i, lbl in enumerate(labels)},
    }


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    from scipy.stats import pearsonr, spearmanr
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float).reshape(-1)
    constant = len(y_true) < 2 or np.ptp(y_true) == 0 or np.ptp(y_pred) == 0  # no correlation is defined
    return {
        "n": int(len(y_true)),
        "mae": float(np.abs(y_true - y_pred).mean()),
        "rmse": float(np.sqrt(((y_true - y_pred) ** 2).mean())),
        "pearson": None if constant else float(pearsonr(y_true, y_pred)[0]),
        "spearman": None if constant else float(spearmanr(y_true, y_pred)[0]),
    }


def score(outputs_of: Callable, splits: dict[str, tuple], task, labels: list[str], thresholds=None,
          fixed: float | None = None) -> tuple[np.ndarray | None, dict[str, dict]]:
    """The task's figures of a model on each split: what training, a pair, the baseline and `ulmfit evaluate`
    all report. `outputs_of(inputs)` gives the model's outputs for a split's inputs (texts, a DataLoader,
    features); `splits` maps a name to (inputs, targets). A multi-label model's `thresholds` are its own, or
    (None) chosen on the `valid` split (`fixed` for every label, or the best F1 of each). Returns
    (thresholds, {split: figures})."""
    outputs = {name: outputs_of(inputs) for name, (inputs, _) in splits.items()}
    if thresholds is None and "valid" in splits:
        thresholds = task.choose_thresholds(splits["valid"][1], outputs["valid"], fixed)
    return thresholds, {name: task.figures(np.asarray(y), outputs[name], labels, thresholds)
                        for name, (_, y) in splits.items()}


def headline(task, figures: dict[str, dict], prefix: str = "", sizes: bool = True) -> dict:
    """`{prefix}{split}_{figure}` of the task's headline figures (and each split's size `n`): results.json's
    keys."""
    return {f"{prefix}{name}_{k}": f[k] for name, f in figures.items()
            for k in (*task.headline, *(("n",) if sizes else ()))}

