"""The tables of docs/results.md's "Few labels" section from the runs scripts/results-few-labels.sh wrote."""
import json
from pathlib import Path

import pandas as pd

RUNS = Path("runs")


def pct(v):
    return "" if v is None or pd.isna(v) else f"{100 * v:.1f}"


def spread(values):
    values = pd.Series(values).dropna()
    if values.empty:
        return ""
    return pct(values.mean()) + (f" ({pct(values.min())}-{pct(values.max())})" if len(values) > 1 else "")


for ds in ("trec6", "sst2"):
    print(f"\n## {ds}")
    curve = RUNS / f"{ds}-curve"
    settings = {"best epoch by valid_loss (before)": RUNS / f"{ds}-choose-steps-null" / "curve.csv",
                "valid_loss, train.min_steps 400": RUNS / f"{ds}-choose-steps-400" / "curve.csv",
                "accuracy, train.min_steps 400 (the new defaults)": curve / "curve.csv"}
    if any(p.is_file() for p in settings.values()):
        print("\nchoosing the defaults: the same samples (seeds 0 and 1), mean (min-max)\n")
        print("| labels | setting | classifier valid | blend valid | classifier test | points |")
        print("| --- | --- | --- | --- | --- | --- |")
        for size in (200, 1000):
            for name, path in settings.items():
                if not path.is_file():
                    continue
                t = pd.read_csv(path)
                g = t[(t["size"] == size) & (t["seed"] < 2)]
                if len(g):
                    print(f"| {size} | {name} | {spread(g['classifier_valid_accuracy'])} | "
                          f"{spread(g['blend_valid_accuracy'])} | {spread(g['classifier_test_accuracy'])} | {len(g)} |")
    curve = RUNS / f"{ds}-curve"
    if (curve / "summary.md").is_file():
        print()
        print((curve / "summary.md").read_text())
        t = pd.read_csv(curve / "curve.csv")
        print(f"curve: {len(t)} points, {t['seconds'].sum() / 60:.1f} min of training in all")
        print("\nthe blend (test accuracy, mean (min-max) over seeds)\n")
        print("| labels | w chosen on valid | classifier alone | baseline alone | blend |")
        print("| --- | --- | --- | --- | --- |")
        for size, g in t.groupby("size"):
            ws = ", ".join(f"{w:.2f}" for w in g["blend_weight"])
            print(f"| {size} | {ws} | {spread(g['classifier_test_accuracy'])} | {spread(g['baseline_test_accuracy'])} "
                  f"| {spread(g['blend_test_accuracy'])} |")
    rows = []
    for seed in range(3):
        path = RUNS / f"{ds}-self-training-s{seed}" / "results.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        st = r["self_training"]
        point = pd.read_csv(curve / "curve.csv").query(f"size == 200 and seed == {seed}").iloc[0]
        rows.append({"seed": seed, "none_valid": st[0]["valid_accuracy"],
                     "round1_valid": st[1]["valid_accuracy"] if len(st) > 1 else None,
                     "pseudo": st[1]["pseudo_labels"] if len(st) > 1 else 0, "kept": st[1]["kept"] if len(st) > 1 else None,
                     "none_test": point["classifier_test_accuracy"], "st_test": r["classifier_test_accuracy"],
                     "blend_test": r["test_accuracy"], "w": r.get("blend_weight")})
    if rows:
        print("\nself-training at 200 labels (the rest of the training texts unlabelled)\n")
        print("| seed | valid: none | valid: round 1 | pseudo-labels | round kept | test: none | test: self-trained | test: blend (w) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for x in rows:
            print(f"| {x['seed']} | {pct(x['none_valid'])} | {pct(x['round1_valid'])} | {x['pseudo']:,} | {x['kept']} | "
                  f"{pct(x['none_test'])} | {pct(x['st_test'])} | {pct(x['blend_test'])} ({x['w']}) |")
