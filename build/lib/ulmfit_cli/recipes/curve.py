"""`ulmfit curve`: the learning curve, which answers "do I need more labels?".

At each size of `--sizes`, a stratified sample of the config's training rows (one per seed: `--seeds`
samples, each trained with `run.seed + seed`; the full set once) is trained by train-clf as the config
says, from the same fine-tuned LM (`init.from_run`, never fine-tuned again), and scored on the same
validation and test sets; each point's run fits the built-in baseline on exactly its rows, and its blend.
The rows of every point are kept as CSV under `samples/` (`ulmfit train-clf --set data.train=...` trains
the same point again), beside the validation and test rows they were all scored on.

The curve dir (`runs/<run.name>-curve` by default) holds `curve.csv` (one row per point: the classifier's,
the baseline's and the blend's validation and test figures, the blend weight, seconds), `curve.png` (the
mean and the spread over seeds per size) and `summary.md`: the size where the classifier overtakes the
baseline, and what the last doubling of the labels bought. A killed curve continues with `--resume`: the
points in curve.csv are kept, the one it was in is trained again.
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from sklearn.model_selection import train_test_split

from ulmfit_cli.classify.splits import read_splits
from ulmfit_cli.config import derive, to_yaml
from ulmfit_cli.corpus.tables import write_table
from ulmfit_cli.console import info, quiet
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import atomic_write, read_json, staged, write_json
from ulmfit_cli.layout import (CLASSIFIER_STAGE, CURVE_CONFIG, CURVE_PLAN, CURVE_PLOT, CURVE_SUMMARY,
                               CURVE_TABLE, POINTS, SAMPLES)
from ulmfit_cli.recipes import STAGES, run_stage
from ulmfit_cli.resolve import config_of, resolve

STAGE = STAGES[CLASSIFIER_STAGE]
ALL = "all"


def parse_sizes(text: str) -> list[int | str]:
    """`50,100,all` -> [50, 100, 'all'] (a clear error for anything else)."""
    sizes: list[int | str] = []
    for part in (p.strip() for p in str(text).split(",")):
        if part == ALL:
            sizes.append(ALL)
        elif part.isdigit() and int(part) >= 2:
            sizes.append(int(part))
        else:
            raise UlmfitError(f"--sizes: {part!r} is not a number of labelled rows (at least 2) or 'all'; "
                              f"e.g. --sizes 50,100,200,500,1000,all")
    if not sizes:
        raise UlmfitError("--sizes: give at least one size, e.g. --sizes 100,200,all")
    return sizes


def curve_dir_of(cfg, run_dir: Path | None) -> Path:
    """--run-dir, else runs/<run.name>-curve."""
    return Path(run_dir) if run_dir is not None else Path("runs") / f"{cfg.run.name}-curve"


def _sample(train: pd.DataFrame, size: int, seed: int, by_class: bool) -> pd.DataFrame:
    """`size` rows of `train`, stratified by label where the task has classes and each has enough rows."""
    if size >= len(train):
        return train
    try:
        part, _ = train_test_split(train, train_size=size, random_state=seed,
                                   stratify=train["label"] if by_class else None)
    except ValueError:  # a class too rare to stratify at this size: a plain random sample
        part, _ = train_test_split(train, train_size=size, random_state=seed)
    return part


def _write_rows(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table(frame[["text", "label"]], path)
    return path


def curve(configs: list[Path], overrides: list[str], sizes: str | list = "50,100,200,500,1000,all",
          seeds: int = 3, run_dir: Path | None = None, force: bool = False, resume: bool = False) -> dict:
    """Train (or continue) the curve's points; returns {curve_dir, points, summary}."""
    own = resume  # the curve's own curve.yaml, which it rewrites: not an input
    if resume:
        if run_dir is None or not (Path(run_dir) / CURVE_CONFIG).is_file():
            raise UlmfitError(f"--resume: {run_dir} is not a curve dir (no {CURVE_CONFIG}); give --run-dir "
                              f"of a curve")
        configs = [Path(run_dir) / CURVE_CONFIG]
        asked = read_json(Path(run_dir) / CURVE_PLAN, "--resume")
        sizes, seeds = asked["sizes"], asked["seeds"]
    sizes = parse_sizes(sizes) if isinstance(sizes, str) else sizes
    if seeds < 1:
        raise UlmfitError("--seeds: at least 1")
    cfg = config_of(STAGE, configs, overrides, own=own)
    task = cfg.task
    if task.label_lists:
        raise UlmfitError("ulmfit curve: a multi-label set has no one label per row to sample by; curves are "
                          "for single-label and regression tasks")
    if not cfg.data.test:
        raise UlmfitError("ulmfit curve needs data.test: each point chooses its epoch and blend on the "
                          "validation split, so the curve is measured on texts no point chose on")
    first = task.headline[0]
    out = curve_dir_of(cfg, run_dir)
    with staged(out, f"curve dir {out}", force, resume, in_place=True):
        # what --resume reads
        atomic_write(out / CURVE_CONFIG, lambda f: f.write(to_yaml(cfg).encode("utf-8")))
        write_json(out / CURVE_PLAN, {"sizes": sizes, "seeds": seeds})
        shutil.rmtree(out / POINTS, ignore_errors=True)  # a killed point's run dir, staging and lock
        labels, train, valid, test = read_splits(cfg)
        valid_file = _write_rows(valid, out / SAMPLES / "valid.csv")
        test_file = _write_rows(test, out / SAMPLES / "test.csv")
        table = out / CURVE_TABLE
        rows = pd.read_csv(table).to_dict("records") if resume and table.is_file() else []
        done = {(int(r["size"]), int(r["seed"])) for r in rows}
        points = [(min(s if s != ALL else len(train), len(train)), k) for s in sizes
                  for k in range(seeds if s != ALL and s < len(train) else 1)]
        points = list(dict.fromkeys(points))  # a size at or above the set's is the full set, once
        shown = ", ".join(str(s) for s in dict.fromkeys(s for s, _ in points))
        info(f"curve: {len(points)} point(s), each a train-clf run from {cfg.init.from_run}: sizes {shown} "
             f"of {len(train):,} labelled rows, {seeds} seed(s) below the full set; scored on {len(valid):,} "
             f"validation and {len(test):,} test rows")
        if done:
            info(f"curve: {out}: {len(done)} of {len(points)} point(s) already done")
        for size, seed in points:
            if (size, seed) in done:
                continue
            t0 = time.perf_counter()
            name = f"n{size}-s{seed}"
            rows_file = _write_rows(_sample(train, size, cfg.run.seed + seed, task.by_class),
                                    out / SAMPLES / f"{name}.csv")
            point = derive(cfg, {"data.train": str(rows_file), "data.valid": str(valid_file),
                                 "data.test": str(test_file), "data.text_col": "text",
                                 "data.label_col": "label", "data.label_delim": None,
                                 "data.encoding": "utf-8",
                                 "run.seed": cfg.run.seed + seed, "run.dir": str(out / POINTS / name),
                                 "run.name": f"{cfg.run.name}-{name}"})
            try:
                with quiet():  # one line per point, below; the split's warnings were printed once above
                    r = run_stage(resolve(STAGE, cfg=point), force=True)
            finally:
                shutil.rmtree(out / POINTS, ignore_errors=True)
            row = {"size": size, "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
                   "blend_weight": r.get("blend_weight")}
            for split in ("valid", "test"):
                row[f"classifier_{split}_{first}"] = r[f"classifier_{split}_{first}"]
                row[f"baseline_{split}_{first}"] = r.get(f"baseline_{split}_{first}")
                row[f"blend_{split}_{first}"] = r[f"{split}_{first}"] if "blend_weight" in r else None
            rows.append(row)
            write_table(pd.DataFrame(rows), table)
            base_test = row[f"baseline_test_{first}"]
            info(f"curve: {size} labels, seed {seed} ({len(rows)}/{len(points)}): test {first} classifier "
                 f"{row[f'classifier_test_{first}']:.4f}"
                 + (f", baseline {base_test:.4f}" if base_test is not None else "")
                 + (f", blend {row[f'blend_test_{first}']:.4f} (w {row['blend_weight']:.2f})"
                    if row["blend_weight"] is not None else "") + f" ({row['seconds']:.0f} s)")
        frame = pd.DataFrame(rows)
        summary = summarize(frame, first, task.lower_is_better(first), cfg.run.name)
        atomic_write(out / CURVE_SUMMARY, lambda f: f.write(summary.encode("utf-8")))
        _plot(frame, first, out / CURVE_PLOT)
    return {"curve_dir": str(out), "points": len(rows), "summary": summary}


def _means(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per size: mean, min, max and the number of seeds of `column`."""
    return frame.groupby("size")[column].agg(["mean", "min", "max", "count"])


def summarize(frame: pd.DataFrame, figure: str, lower_is_better: bool, name: str) -> str:
    """The curve as markdown: the table of means (and spread), where the classifier overtakes the baseline,
    and what the last doubling of the labels bought."""
    pct = figure in ("accuracy", "macro_f1")  # proportions, shown in points
    scale, unit = (100.0, " points") if pct else (1.0, "")

    def show(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else (
            f"{v * scale:.1f}" if pct else f"{v:.4f}")
    clf = _means(frame, f"classifier_test_{figure}")
    has_base = frame[f"baseline_test_{figure}"].notna().any()
    base = _means(frame, f"baseline_test_{figure}") if has_base else None
    has_blend = frame[f"blend_test_{figure}"].notna().any()
    blend = _means(frame, f"blend_test_{figure}") if has_blend else None
    weights = frame.groupby("size")["blend_weight"].mean() if has_blend else None
    lines = [f"# Learning curve: {name}", "",
             f"Test {figure}{' (%)' if pct else ''}, the mean over seeds (min-max); each point trained on "
             f"that many labelled rows and scored on the same validation and test sets.", "",
             "| labelled rows | seeds | classifier | baseline, same rows | blend (mean w) |",
             "| --- | --- | --- | --- | --- |"]
    def cell(m: pd.DataFrame, size) -> str:
        """The mean at `size`, with the min-max over seeds when there are several."""
        row = m.loc[size]
        if row["count"] > 1:
            return f"{show(row['mean'])} ({show(row['min'])}-{show(row['max'])})"
        return show(row["mean"])

    for size, c in clf.iterrows():
        lines.append(f"| {size:,} | {int(c['count'])} | {cell(clf, size)} | "
                     f"{cell(base, size) if has_base else ''} | "
                     + (f"{cell(blend, size)} ({weights[size]:.2f})" if has_blend else "") + " |")
    lines.append("")
    sizes = list(clf.index)
    sign = -1 if lower_is_better else 1
    if has_base:
        ahead = [sign * (clf.loc[s, "mean"] - base.loc[s, "mean"]) > 0 for s in sizes]
        if all(ahead):
            lines.append(f"- **The classifier is ahead of the baseline at every size measured**, from "
                         f"{sizes[0]:,} labelled rows.")
        elif not ahead[-1]:
            behind = abs(clf.loc[sizes[-1], "mean"] - base.loc[sizes[-1], "mean"])
            lines.append(f"- **The classifier does not overtake the baseline** at any size up to "
                         f"{sizes[-1]:,} labelled rows: behind it by {show(behind)}{unit} at the largest.")
        else:
            first_ahead = next(s for i, s in enumerate(sizes) if all(ahead[i:]))
            lines.append(f"- **The classifier overtakes the baseline at {first_ahead:,} labelled rows** and "
                         f"stays ahead at every larger size measured.")
    if len(sizes) >= 2:
        a, b = sizes[-2], sizes[-1]
        doublings = math.log2(b / a)
        gain = sign * (clf.loc[b, "mean"] - clf.loc[a, "mean"])
        per = f", {show(gain / doublings)}{unit} per doubling" if doublings else ""
        text = (f"- **The last doubling**: from {a:,} to {b:,} labelled rows ({doublings:.1f} doubling"
                f"{'s' if abs(doublings - 1) > 0.05 else ''}), the classifier's test {figure} "
                + (f"improved by {show(gain)}{unit}{per}" if gain > 0
                   else f"did not improve ({show(-gain)}{unit} worse)"))
        if has_base:
            base_gain = sign * (base.loc[b, "mean"] - base.loc[a, "mean"])
            text += (f" (the baseline's: {'improved' if base_gain > 0 else 'worse'} by "
                     f"{show(abs(base_gain))}{unit})")
        lines.append(text + ". Another doubling buys about as much if the curve keeps its slope, and less as "
                     "it flattens.")
    return "\n".join(lines) + "\n"


def _plot(frame: pd.DataFrame, figure: str, path: Path) -> None:
    fig = Figure(figsize=(7, 4.5))  # not pyplot: no backend, no window
    ax = fig.subplots()
    for column, name, style in ((f"classifier_test_{figure}", "classifier", "-o"),
                                (f"baseline_test_{figure}", "baseline (TF-IDF, same rows)", "-s"),
                                (f"blend_test_{figure}", "blend", "--^")):
        if not frame[column].notna().any():
            continue
        m = _means(frame, column)
        line, = ax.plot(m.index, m["mean"], style, label=name)
        if (m["count"] > 1).any():
            ax.fill_between(m.index, m["min"], m["max"], color=line.get_color(), alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(frame["size"].unique()), labels=[f"{s:,}" for s in sorted(frame["size"].unique())])
    ax.set_xlabel("labelled training rows")
    ax.set_ylabel(f"test {figure}")
    ax.set_title("learning curve: mean over seeds, band = min-max")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
