"""The baseline a user would try first: TF-IDF (word 1-2 grams) + logistic regression (scikit-learn).

C is picked on the validation set (the given one, or the same stratified split as `ulmfit
train-clf`: `valid_pct` with `run.seed` 42), then the model is refit on the training rows and
scored on the test set. Prints one JSON line.
  python bench/tfidf_baseline.py --train ../shared/data/trec6/train.csv --test ../shared/data/trec6/test.csv
"""
from __future__ import annotations

import argparse
import json
import time

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline


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
    t0 = time.perf_counter()
    read = lambda p: pd.read_csv(p, dtype=str, keep_default_na=False)  # noqa: E731
    train, test = read(args.train), read(args.test)
    if args.valid:
        valid = read(args.valid)
    else:
        train, valid = train_test_split(train, test_size=args.valid_pct, random_state=args.seed,
                                        stratify=train[args.label_col])
    make = lambda c: make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),  # noqa: E731
                                   LogisticRegression(C=c, max_iter=2000))
    scores = {c: accuracy_score(valid[args.label_col], make(c).fit(train[args.text_col], train[args.label_col])
                                .predict(valid[args.text_col])) for c in (0.3, 1, 3, 10, 30, 100)}
    best = max(scores, key=scores.get)
    model = make(best).fit(train[args.text_col], train[args.label_col])
    pred = model.predict(test[args.text_col])
    print(json.dumps({"C": best, "valid_accuracy": scores[best],
                      "test_accuracy": accuracy_score(test[args.label_col], pred),
                      "test_macro_f1": f1_score(test[args.label_col], pred, average="macro"),
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
