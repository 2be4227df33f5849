"""Are the explanations faithful, and what do they cost? The deletion test (ERASER's comprehensiveness, the
AOPC literature) for each attribution method side by side on one classifier and the same texts: Integrated
Gradients (ulmfit's default), gradient x input, and fastai v1's intrinsic attention (the stock way, which
fastai v2 dropped), each against removing random tokens.

For each test text: the predicted class's probability (the model alone, no blend) minus its probability once
the k best-scored tokens are removed, against k random tokens (several draws, averaged per text); xxbos is
never removed. Printed: the means with their standard errors, the paired difference and the ratio, for
k = 1, 2, 3; then each method's cost per text, one text at a time (p50) and in batches, beside a prediction.

  python bench/explain_faithfulness.py [--model runs/demo-clf] [--texts 500] [--draws 5] [--threads 1]
Texts: TREC-6 test (data/trec6).
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]


def mean_se(x: np.ndarray) -> str:
    return f"{x.mean():.3f} ± {x.std(ddof=1) / np.sqrt(len(x)):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "runs" / "demo-clf"))
    ap.add_argument("--texts", type=int, default=500)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="60 texts, 2 draws: the smoke test's size")
    args = ap.parse_args()
    from ulmfit_cli.inference.classifier import Classifier
    from ulmfit_cli.inference.explain import METHODS, deletion, explain
    torch.set_num_threads(args.threads)
    n, draws = (60, 2) if args.quick else (args.texts, args.draws)
    texts = pd.read_csv(ROOT / "data" / "trec6" / "test.csv")["text"].astype(str).tolist()[:n]
    clf = Classifier.load(args.model, "cpu")
    print(f"model {args.model}, {len(texts)} TREC-6 test texts, {draws} random draws per text, "
          f"{args.threads} thread(s), torch {torch.__version__}\n")
    print("| method | k | texts | drop, attributed | drop, random | paired difference | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for method in METHODS:
        for k, d in deletion(clf, texts, ks=(1, 2, 3), draws=draws, method=method).items():
            a, r = d["attributed"], d["random"]
            print(f"| {method} | {k} | {len(a)} | {mean_se(a)} | {mean_se(r)} | {mean_se(a - r)} | "
                  f"{a.mean() / max(r.mean(), 1e-9):.1f}x |")
    print("\nCost per text (ms): one text at a time (p50 over the first 50) and in batches (all texts)")
    print("| | one text, p50 | batched |")
    print("| --- | --- | --- |")
    rows = {"predict (no explanation)": lambda t, progress=False: clf.predict_proba(t)}
    rows.update({f"explain {m}": (lambda t, m=m: explain(clf, t, method=m)) for m in METHODS})
    for name, run in rows.items():
        run(texts[:2])  # warm-up
        single = []
        for t in texts[:50]:
            t0 = time.perf_counter()
            run([t])
            single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run(texts)
        batched = (time.perf_counter() - t0) / len(texts)
        print(f"| {name} | {np.median(single) * 1e3:.2f} | {batched * 1e3:.2f} |")


if __name__ == "__main__":
    main()
