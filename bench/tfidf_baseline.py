"""The TF-IDF + logistic-regression baseline of `ulmfit train-clf` (`ulmfit_cli.classify.baseline`) on its own,
for scripts/results.sh: C is picked on the validation set (the given one, or the same stratified split
as train-clf: `valid_pct` with seed 42), then scored on the test set. Prints one JSON line.
  python bench/tfidf_baseline.py --train ../shared/data/trec6/train.csv --test ../shared/data/trec6/test.csv
"""
from __future__ import annotations

import argparse
import json

import pandas as pd
from sklearn.model_selection import train_test_split

from ulmfit_cli.classify.baseline import tfidf_baseline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid")
    ap.add_argument("--test", required=True)
    ap.add_argument("--text-col", default="text")
    ap.add_argument("--label-col", default="label")
    ap.add_argument("--valid-pct", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    read = lambda p: pd.read_csv(p, dtype=str, keep_default_na=False)  # noqa: E731
    train, test = read(args.train), read(args.test)
    if args.valid:
        valid = read(args.valid)
    else:
        train, valid = train_test_split(train, test_size=args.valid_pct, random_state=args.seed,
                                        stratify=train[args.label_col])
    labels = sorted(train[args.label_col].unique())
    index = {lbl: i for i, lbl in enumerate(labels)}
    split = lambda df: (df[args.text_col].tolist(), df[args.label_col].map(index).to_numpy())  # noqa: E731
    r = tfidf_baseline(split(train), split(valid), split(test), labels)
    print(json.dumps({"C": r["baseline_C"], "valid_accuracy": r["baseline_valid_accuracy"],
                      "test_accuracy": r["baseline_test_accuracy"], "test_macro_f1": r["baseline_test_macro_f1"],
                      "seconds": r["baseline_seconds"]}))


if __name__ == "__main__":
    main()
