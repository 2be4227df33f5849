"""What `ulmfit evaluate` shows of a report (`classify.scoring`'s figures): the text table and the confusion
matrix as a PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def report_text(report: dict) -> str:
    """The report as text: single-label per-class figures and the confusion matrix (rows: true, columns:
    predicted); multi-label per-label figures and thresholds; regression its four figures; then the
    baseline's figures on the same input, when there are any."""
    text = _figures(report)
    base = report.get("baseline")
    if base:
        shown = "   ".join(f"{k} {_fmt(v)}" for k, v in base.items()
                           if k not in ("name", "fit_on", "seconds"))
        text += f"\n\nbaseline ({base['name']}, refitted on {base['fit_on'].removeprefix('the ')}): {shown}"
    return text


def _figures(report: dict) -> str:
    if "per_label" in report:
        w = max(9, *(len(lbl) for lbl in report["per_label"]))
        lines = [f"micro-F1 {report['micro_f1']:.4f}   macro-F1 {report['macro_f1']:.4f}   subset accuracy "
                 f"{report['subset_accuracy']:.4f}   ROC-AUC {_fmt(report['roc_auc'])}   n {report['n']}", "",
                 f"{'label':<{w}}  precision  recall     f1  support  threshold"]
        for lbl, c in report["per_label"].items():
            lines.append(f"{lbl:<{w}}  {c['precision']:9.3f}  {c['recall']:6.3f}  {c['f1']:5.3f}  "
                         f"{c['support']:7d}  {c['threshold']:9.2f}")
        return "\n".join(lines)
    if "mae" in report:
        return (f"MAE {report['mae']:.4f}   RMSE {report['rmse']:.4f}   Pearson {_fmt(report['pearson'])}   "
                f"Spearman {_fmt(report['spearman'])}   n {report['n']}")
    labels = report["confusion"]["labels"]
    w = max(9, *(len(lbl) for lbl in labels))
    lines = [f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   n {report['n']}", "",
             f"{'class':<{w}}  precision  recall     f1  support"]
    for lbl, c in report["per_class"].items():
        lines.append(f"{lbl:<{w}}  {c['precision']:9.3f}  {c['recall']:6.3f}  {c['f1']:5.3f}  "
                     f"{c['support']:7d}")
    lines += ["", "confusion (rows: true, columns: predicted)",
              " " * w + "  " + "  ".join(f"{lbl[:7]:>7}" for lbl in labels)]
    for lbl, row in zip(labels, report["confusion"]["matrix"]):
        lines.append(f"{lbl:<{w}}  " + "  ".join(f"{v:7d}" for v in row))
    return "\n".join(lines)


def plot_confusion(report: dict, path: Path) -> None:
    labels = report["confusion"]["labels"]
    size = max(4, 0.6 * len(labels) + 2)
    fig = Figure(figsize=(size, size))  # not pyplot: no backend, no window
    ax = fig.subplots()
    ConfusionMatrixDisplay(np.array(report["confusion"]["matrix"]), display_labels=labels).plot(
        ax=ax, colorbar=False, xticks_rotation=45)
    ax.set_title(f"accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
