"""The figures of every classifier task, for `ulmfit evaluate`, train-clf's results.json and the baseline.

single_label: accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix (and a PNG);
multi_label: micro and macro F1, subset accuracy, ROC-AUC and per-label figures at per-label decision
thresholds (chosen on the validation set by `choose_thresholds`); regression: MAE, RMSE, Pearson and
Spearman correlation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from ulmfit_cli.errors import UlmfitError


def check_labels(seen, labels: list[str], what: str) -> None:
    """Refuse labels the model does not know (`seen`: class names, or label sets of a multi-label task)."""
    seen = [x for s in seen for x in s] if any(isinstance(s, tuple) for s in seen) else seen
    unseen = sorted(set(seen) - set(labels))
    if unseen:
        raise UlmfitError(f"{what} has labels the model never saw: {', '.join(unseen[:20])}"
                          + (f" (and {len(unseen) - 20} more)" if len(unseen) > 20 else "")
                          + f"; the model knows: {', '.join(labels)}")


def scores(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Figures for integer class ids `y_true`/`y_pred` over `labels`."""
    idx = list(range(len(labels)))
    p, r, f, n = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)),
        "per_class": {lbl: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(n[i])}
                      for i, lbl in enumerate(labels)},
        "confusion": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=idx).tolist()},
    }


THRESHOLDS_FILE = "thresholds.json"  # a multi-label model's {label: threshold}, in its run dir and bundle
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
        "per_label": {lbl: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(n[i]),
                            "threshold": float(thresholds[i])} for i, lbl in enumerate(labels)},
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


def task_scores(task: str, y_true: np.ndarray, outputs: np.ndarray, labels: list[str],
                thresholds: np.ndarray | None = None) -> dict:
    """The report of `task` for targets `y_true` (class ids, a 0/1 matrix or numbers) and the model's
    `outputs` (probabilities, or the predicted numbers)."""
    from ulmfit_cli.tasks import MULTI, REGRESSION
    if task == MULTI:
        return multi_scores(y_true, outputs, labels, thresholds)
    if task == REGRESSION:
        return regression_scores(y_true, outputs)
    return scores(y_true, outputs.argmax(1), labels)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def table(report: dict) -> str:
    """The report as text: single-label per-class figures and the confusion matrix (rows: true, columns:
    predicted); multi-label per-label figures and thresholds; regression its four figures; then the
    baseline's figures on the same input, when there are any."""
    text = _figures(report)
    base = report.get("baseline")
    if base:
        shown = "   ".join(f"{k} {_fmt(v)}" for k, v in base.items() if k not in ("name", "fit_on", "seconds"))
        text += f"\n\nbaseline ({base['name']}, refitted on {base['fit_on'].removeprefix('the ')}): {shown}"
    return text


def _figures(report: dict) -> str:
    if "per_label" in report:
        w = max(9, *(len(lbl) for lbl in report["per_label"]))
        lines = [f"micro-F1 {report['micro_f1']:.4f}   macro-F1 {report['macro_f1']:.4f}   subset accuracy "
                 f"{report['subset_accuracy']:.4f}   ROC-AUC {_fmt(report['roc_auc'])}   n {report['n']}", "",
                 f"{'label':<{w}}  precision  recall     f1  support  threshold"]
        for lbl, c in report["per_label"].items():
            lines.append(f"{lbl:<{w}}  {c['precision']:9.3f}  {c['recall']:6.3f}  {c['f1']:5.3f}  {c['support']:7d}"
                         f"  {c['threshold']:9.2f}")
        return "\n".join(lines)
    if "mae" in report:
        return (f"MAE {report['mae']:.4f}   RMSE {report['rmse']:.4f}   Pearson {_fmt(report['pearson'])}   "
                f"Spearman {_fmt(report['spearman'])}   n {report['n']}")
    labels = report["confusion"]["labels"]
    w = max(9, *(len(lbl) for lbl in labels))
    lines = [f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   n {report['n']}", "",
             f"{'class':<{w}}  precision  recall     f1  support"]
    for lbl, c in report["per_class"].items():
        lines.append(f"{lbl:<{w}}  {c['precision']:9.3f}  {c['recall']:6.3f}  {c['f1']:5.3f}  {c['support']:7d}")
    lines += ["", "confusion (rows: true, columns: predicted)",
              " " * w + "  " + "  ".join(f"{lbl[:7]:>7}" for lbl in labels)]
    for lbl, row in zip(labels, report["confusion"]["matrix"]):
        lines.append(f"{lbl:<{w}}  " + "  ".join(f"{v:7d}" for v in row))
    return "\n".join(lines)


def plot_confusion(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay
    labels = report["confusion"]["labels"]
    size = max(4, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.array(report["confusion"]["matrix"]), display_labels=labels).plot(
        ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title(f"accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
