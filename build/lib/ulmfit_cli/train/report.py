"""What a training run's metrics.jsonl shows: `ulmfit report`'s table and the plots (`plots/*.png` in
every training run dir). metrics.jsonl has one line per epoch, with the sampled per-step rates and
smoothed losses of fastai's Recorder.

Why not fastai's `recorder.plot_loss` / `plot_sched`: the Recorder holds only the last `fit` (one
phase of a stage) and is gone after the process; these plots span every phase, and a resumed run."""
from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import read_json
from ulmfit_cli.layout import LOSS_PLOT, LR_PLOT, METRICS, PLOTS, RESULTS


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS
    if not path.is_file():
        return []
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise UlmfitError(f"{path}: line {line} is not UTF-8 text (byte {e.start}): the file is "
                          f"damaged") from None
    records = []
    # split on newlines only (splitlines also splits on \x1c, \u2028...): the numbers are the file's lines
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UlmfitError(f"{path}: line {n} is not JSON at column {e.colno} ({e.msg}): the file is "
                              f"damaged or was cut short") from None
        if not isinstance(record, dict):
            raise UlmfitError(f"{path}: line {n} is not a JSON object (one per epoch): the file is damaged")
        records.append(record)
    return records


def write_plots(run_dir: Path, title: str) -> list[Path]:
    """loss.png (the smoothed training loss of every step, the validation loss at each epoch's end,
    phases marked) and lr.png (the rate of each step)."""
    records = read_metrics(run_dir)
    if not records:
        return []
    out = run_dir / PLOTS
    out.mkdir(exist_ok=True)
    fig = Figure(figsize=(7, 4))  # not pyplot: no backend, no window, a notebook's own left alone
    ax = fig.subplots()
    xs, ys = [], []
    for epoch, r in enumerate(records):  # steps as fractions of their epoch
        steps = r.get("loss_steps") or []
        xs += [epoch + (i + 1) / len(steps) for i in range(len(steps))]
        ys += steps
    if ys:
        ax.plot(xs, ys, "-", lw=1, label="train loss (smoothed, per step)")
    else:  # a run logged before per-step losses were
        ax.plot(range(1, len(records) + 1), [r.get("train_loss") for r in records], "o-", label="train loss")
    ax.plot(range(1, len(records) + 1), [r.get("valid_loss") for r in records], "s-", label="valid loss")
    for i in range(1, len(records)):
        if records[i].get("phase") != records[i - 1].get("phase"):
            ax.axvline(i, color="grey", ls=":")
            ax.text(i + 0.05, ax.get_ylim()[1], records[i].get("phase", ""), va="top", fontsize=8,
                    color="grey")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / LOSS_PLOT, dpi=100)
    lrs = [lr for r in records for lr in r.get("lr_steps", [])]
    paths = [out / LOSS_PLOT]
    if lrs:
        fig = Figure(figsize=(7, 3))
        ax = fig.subplots()
        ax.plot(range(len(lrs)), lrs)
        ax.set_xlabel("step (sampled)")
        ax.set_ylabel("learning rate (last layer group)")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(out / LR_PLOT, dpi=100)
        paths.append(out / LR_PLOT)
    return paths


def run_table(run_dir: Path) -> str:
    """`ulmfit report`: the figures people look at first, as a table: per epoch, then the final results."""
    if not run_dir.is_dir():
        raise UlmfitError(f"{run_dir} is not a directory")
    records = read_metrics(run_dir)
    results = read_json(run_dir / RESULTS, "report") if (run_dir / RESULTS).is_file() else {}
    if not records and not results:
        raise UlmfitError(f"{run_dir} has neither metrics.jsonl nor results.json: not a ulmfit training run")
    cols = [c for c in ("train_loss", "valid_loss", "perplexity", "accuracy", "f1_score", "accuracy_multi",
                        "f1_macro", "f1_micro", "mae", "rmse", "pearson", "spearman", "tokens_per_s",
                        "seconds")
            if any(c in r for r in records)]
    lines = [f"run {run_dir}" + (f" ({records[0]['stage']})" if records and "stage" in records[0] else "")]
    if records:
        lines.append(f"{'epoch':>5}  {'phase':<14}" + "".join(f"{c:>15}" for c in cols))
        for i, r in enumerate(records, 1):
            vals = "".join(f"{r[c]:>15.4f}" if isinstance(r.get(c), float) else f"{str(r.get(c, '')):>15}"
                           for c in cols)
            lines.append(f"{i:>5}  {str(r.get('phase', ''))[:14]:<14}{vals}")
        total = sum(r.get("seconds", 0) for r in records if isinstance(r.get("seconds", 0), (int, float)))
        lines.append(f"training time {total:.1f} s over {len(records)} epoch(s)")
    for k, v in results.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lines.append(f"{k:>24}: {v:.4f}" if isinstance(v, float) else f"{k:>24}: {v}")
    return "\n".join(lines)
