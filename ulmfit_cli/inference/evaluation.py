"""`ulmfit evaluate`: accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix
of one classifier (or an ensemble) on a labelled file, as JSON and a PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from ulmfit_cli.errors import UlmfitError


def check_labels(seen: list[str], labels: list[str], what: str) -> None:
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


def table(report: dict) -> str:
    """The report as text: per-class figures, then the confusion matrix (rows: true, columns: predicted)."""
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
