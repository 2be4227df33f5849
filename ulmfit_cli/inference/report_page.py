"""`ulmfit evaluate`'s report.html: one self-contained page (inline CSS, images as data URIs, no script and no
external request) that a person reads to see where a classifier fails and why.

It shows the figures beside the baseline's, then by task: single-label the confusion matrix, per-class
precision/recall/F1, a reliability diagram with the expected calibration error, the most confident errors and
the least confident correct texts; multi-label per-label figures and reliability, and the most confident wrong
decisions per (text, label); regression the residuals against the target and the largest errors. Each shown
text has its words highlighted by their attribution (`inference.explain`) for the class the model chose (the
label in question; the output), unless explanations are off or Captum is missing, which the page says.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ulmfit_cli.corpus.text import BOS
from ulmfit_cli.files import atomic_write
from ulmfit_cli.inference.predict import explanations

CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;
text-align:right}td.t,th.t{text-align:left}.muted{color:#777;font-size:.9em}h2{margin-top:1.6em}
.w{padding:.05em .12em;border-radius:3px}.sp{color:#555;font-size:.75em}img{max-width:100%}"""


def explain_cases(clf, texts: list[str], shown: dict, method: str = "ig") -> dict:
    """{(row, output index): Explanation} for every shown text, one `explain` call per output index."""
    wanted: dict[int, set[int]] = {}
    for rows in shown.values():
        for i, j, *_ in rows:
            wanted.setdefault(j, set()).add(i)
    found = {}
    for j, rows in wanted.items():
        rows = sorted(rows)
        shown_texts = [texts[i] for i in rows]
        for i, e in zip(rows, explanations(clf, shown_texts, target=j, method=method, progress=True)):
            found[(i, j)] = e
    return found


def write_page(path: Path, report: dict, task, outputs: np.ndarray, targets: np.ndarray, texts: list[str],
               shown: dict, found: dict, note: str = "") -> None:
    """Write report.html (atomically): `report` evaluate's (its figures say which sections apply), `shown` the
    task's texts to show (`Outputs.shown`), `found` their explanations by (row, output)."""
    title = f"Evaluation of {', '.join(report['models'])} on {report['input']}"
    parts = [f"<h1>{_e(title)}</h1>", f"<p class='muted'>{_e(task.name)}, {report['n']:,} texts</p>",
             "<h2>Figures</h2>", _figures(report)]
    if "confusion" in report:
        parts += ["<h2>Confusion matrix</h2><p class='muted'>rows: true class, columns: predicted</p>",
                  _confusion(report["confusion"]), "<h2>Per class</h2>",
                  _per(report["per_class"], ("precision", "recall", "f1", "support"))]
    if "per_label" in report:
        ece = {lbl: c["ece"] for lbl, c in report["calibration"].items()}
        per = {lbl: {**v, "ECE": ece[lbl]} for lbl, v in report["per_label"].items()}
        cols = ("precision", "recall", "f1", "support", "threshold", "ECE")
        parts += ["<h2>Per label</h2>", _per(per, cols)]
    if "calibration" in report:
        parts += ["<h2>Reliability</h2>", _img(_reliability(report["calibration"]))]
    else:  # a regression's numbers
        parts += ["<h2>Residuals</h2>", _img(_residuals(outputs[:, 0], targets))]
    words = note or "words not highlighted"
    if found:
        weight = next(iter(found.values())).model_weight
        words = "the words in green spoke for the prediction, in red against it"
        if weight < 1:
            words += f" (the classifier's part of its blend with the baseline, weight {weight:.2f})"
    for name, rows in shown.items():
        parts += [f"<h2>{_e(name)}</h2><p class='muted'>{_e(words)}</p>",
                  _cases(rows, texts, found, task.ranked_by)]
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
    atomic_write(path, lambda f: f.write(page.encode("utf-8")))


def _e(x) -> str:
    return html.escape(str(x))


def _num(v) -> str:
    return "n/a" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:.4f}"


def _figures(report: dict) -> str:
    base = report.get("baseline") or {}
    keys = [k for k, v in report.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n"]  # n: in the header
    head = "<tr><th class='t'>figure</th><th>model</th>" + ("<th>baseline</th>" if base else "") + "</tr>"
    rows = "".join(f"<tr><td class='t'>{_e(k)}</td><td>{_num(report[k])}</td>"
                   + (f"<td>{_num(base.get(k))}</td>" if base else "") + "</tr>" for k in keys)
    cal = report.get("calibration")
    if cal and "ece" in cal:
        rows += f"<tr><td class='t'>expected calibration error</td><td>{cal['ece']:.4f}</td></tr>"
    who = (f"<p class='muted'>baseline: {_e(base['name'])}, refitted on {_e(base['fit_on'])}</p>"
           if base else "")
    return f"<table id='figures'>{head}{rows}</table>{who}"


def _confusion(confusion: dict) -> str:
    m, labels = np.array(confusion["matrix"]), confusion["labels"]
    top = max(int(m.max()), 1)
    head = "<tr><th></th>" + "".join(f"<th>{_e(lbl)}</th>" for lbl in labels) + "</tr>"
    rows = "".join("<tr><th class='t'>" + _e(lbl) + "</th>" + "".join(
        f"<td style='background:rgba(74,127,193,{v / top:.2f})'>{v}</td>" for v in row) + "</tr>"
        for lbl, row in zip(labels, m.tolist()))
    return f"<table id='confusion'>{head}{rows}</table>"


def _per(per: dict, cols: tuple) -> str:
    head = "<tr><th class='t'></th>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>"
    rows = "".join(f"<tr><td class='t'>{_e(k)}</td>" + "".join(f"<td>{_num(v[c])}</td>" for c in cols)
                   + "</tr>" for k, v in per.items())
    return f"<table class='per'>{head}{rows}</table>"


def _cases(rows: list, texts: list[str], found: dict, ranked_by: str) -> str:
    head = (f"<tr><th class='t'>text</th><th class='t'>true</th><th class='t'>predicted</th>"
            f"<th>{ranked_by}</th></tr>")
    body = "".join(f"<tr><td class='t'>{_words(found.get((i, j)), texts[i])}</td>"
                   f"<td class='t'>{_e(truth)}</td><td class='t'>{_e(pred)}</td><td>{fig:.3f}</td></tr>"
                   for i, j, truth, pred, fig in rows)
    return f"<table class='cases'>{head}{body}</table>"


def _words(explanation, text: str) -> str:
    """The text as its tokens, each shaded by its score (green for, red against), or the plain text."""
    if explanation is None:
        return _e(text)
    s = explanation.scores[0]
    top = max(float(np.abs(s).max()), 1e-12)
    out = []
    for tok, v in zip(explanation.tokens, s):
        if tok == BOS:
            continue
        colour = "40,160,80" if v >= 0 else "210,50,50"
        cls = "w sp" if tok.startswith("xx") else "w"
        shade = f"background:rgba({colour},{abs(v) / top:.2f})"
        out.append(f"<span class='{cls}' title='{v:.4f}' style='{shade}'>{_e(tok)}</span>")
    return " ".join(out)


def _img(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})  # no URL in the PNG's text chunks
    return f"<img alt='' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _reliability(cal: dict) -> Figure:
    """One curve (the top class's confidence), or one per label (at most 8)."""
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="#999", lw=1)
    top = "ece" in cal
    for name, c in list(({"model": cal} if top else cal).items())[:8]:
        ax.plot([b["confidence"] for b in c["bins"]], [b["accuracy"] for b in c["bins"]], marker="o",
                label=f"{name} (ECE {c['ece']:.3f})")
    ax.set_xlabel("confidence" if top else "predicted probability")
    ax.set_ylabel("accuracy" if top else "observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _residuals(pred: np.ndarray, targets: np.ndarray) -> Figure:
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    ax.scatter(targets, pred - targets, s=8, alpha=.6)
    ax.axhline(0, color="#999", lw=1)
    ax.set_xlabel("target")
    ax.set_ylabel("prediction - target")
    fig.tight_layout()
    return fig
