"""A classifier's data as it trains on it: the labelled files read for the task, the validation split made
from `data.train` when there is no `data.valid`, and the test set; the one reader of a train-clf config's
data, shared by training (and so tune's trials), a pair's ensemble figures and `ulmfit evaluate`'s
baseline refit."""
from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from ulmfit_cli.config import ClassifierConfig
from ulmfit_cli.console import info
from ulmfit_cli.corpus.tables import read_texts
from ulmfit_cli.files import input_path


def read_split(cfg: ClassifierConfig, key: str) -> pd.DataFrame:
    """One labelled file of the config (`key`: data.train, data.valid or data.test), read for its task, with
    documents longer than data.max_chars cut to their end."""
    value = getattr(cfg.data, key.split(".")[1])
    df = read_texts(input_path(value, key), key, cfg.data.text_col, cfg.data.label_col, cfg.data.encoding,
                    cfg.data.encoding_errors, task=cfg.task, label_delim=cfg.data.label_delim)
    long = df["text"].str.len() > cfg.data.max_chars
    if long.any():  # bounded memory and time; the classifier reads the end of a document anyway
        df.loc[long, "text"] = df.loc[long, "text"].str[-cfg.data.max_chars:]
        info(f"{key}: {value}: {int(long.sum()):,} document(s) longer than data.max_chars="
             f"{cfg.data.max_chars:,} keep only their last {cfg.data.max_chars:,} characters")
    return df


def split_off(df: pd.DataFrame, pct: float, seed: int, stratify: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A `pct` share of `df` held out for validation, stratified by label when asked and possible."""
    try:
        return train_test_split(df, test_size=pct, random_state=seed,
                                stratify=df["label"] if stratify else None)
    except ValueError:  # a class too rare to stratify, or too few rows: plain random split
        return train_test_split(df, test_size=max(pct, 1 / len(df)), random_state=seed)


def read_splits(cfg: ClassifierConfig, with_test: bool = True):
    """(labels, train, valid, test) as the classifier trains on them: test None without `with_test` (or
    without data.test)."""
    task = cfg.task
    train = read_split(cfg, "data.train")
    labels = task.label_names(train, cfg.data)
    if cfg.data.valid:
        valid = read_split(cfg, "data.valid")
    else:
        # valid_pct of a small set is too few texts to pick an epoch or a blend weight on: at least
        # data.min_valid, as long as three quarters of the rows still train
        pct = max(cfg.data.valid_pct, min(cfg.data.min_valid, len(train) // 4) / len(train))
        train, valid = split_off(train, pct, cfg.run.seed, stratify=task.by_class)
        unseen = sorted(set(labels) - set(train["label"])) if task.by_class else []
        if unseen:  # a class with one row went to the validation split: it is never trained on
            info(f"warning: data.train: {cfg.data.train}: class(es) {', '.join(map(repr, unseen))} "
                 f"have too few rows to be in both splits and are not trained on; add rows, "
                 f"or give data.valid")
    if len(valid) < cfg.data.min_valid:
        chosen = "the best epoch and the blend weight are" if cfg.data.baseline else "the best epoch is"
        info(f"warning: the validation split has {len(valid)} documents (fewer than data.min_valid="
             f"{cfg.data.min_valid}): {chosen} chosen on them, and one document is {100 / len(valid):.1f} % "
             f"of them; give more labelled rows or a larger data.valid")
    test = read_split(cfg, "data.test") if cfg.data.test and with_test else None
    for key, part in (("data.valid", valid if cfg.data.valid else None), ("data.test", test)):
        if part is not None:
            task.check_known(part["label"].tolist(), labels, f"{key}: {getattr(cfg.data, key[5:])}")
    return labels, train, valid, test
