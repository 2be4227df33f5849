"""Stage 3: train a text classifier on a fine-tuned (or pretrained) encoder.

fastai's `text_classifier_learner` (concat pooling, head `model.lin_ftrs`) with the
upstream encoder and vocabulary, trained by gradual unfreezing: each entry of
`train.stages` calls `freeze_to` and `fit_one_cycle(epochs, slice(lr / lr_div, lr))`. The task
(`ulmfit_cli.tasks`: single-label, multi-label, regression) decides the targets, the loss and the
figures; a multi-label model's per-label thresholds are chosen on the validation set (thresholds.json).
A TF-IDF + linear baseline is fitted on the same splits and reported beside it (`data.baseline`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ulmfit_cli import paths
from ulmfit_cli.config import ClassifierConfig
from ulmfit_cli.console import info
from ulmfit_cli.corpus.direction import orient_docs
from ulmfit_cli.corpus.tables import read_texts
from ulmfit_cli.corpus.tokenize import SP_MODEL, build_vocab, numericalize, tokenize
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.inference.evaluation import THRESHOLDS_FILE, check_labels, choose_thresholds, task_scores
from ulmfit_cli.resolve import Resolved
from ulmfit_cli.runs import Run
from ulmfit_cli.tasks import HEADLINE, MULTI, REGRESSION, SINGLE, encode_targets
from ulmfit_cli.train import distributed
from ulmfit_cli.train.callbacks import logger_callbacks
from ulmfit_cli.train.checkpoints import Phase, Plan
from ulmfit_cli.train.device import start
from ulmfit_cli.train.fingerprint import data_signature
from ulmfit_cli.train.learners import check_freeze_to, clf_learner, load_encoder
from ulmfit_cli.train.loaders import clf_dl, clf_dls


def _read(cfg: ClassifierConfig, key: str) -> pd.DataFrame:
    value = getattr(cfg.data, key.split(".")[1])
    df = read_texts(paths.resolve(value, key), key, cfg.data.text_col, cfg.data.label_col, cfg.data.encoding,
                    cfg.data.encoding_errors, task=cfg.task, label_delim=cfg.data.label_delim)
    long = df["text"].str.len() > cfg.data.max_chars
    if long.any():  # bounded memory and time; the classifier reads the end of a document anyway
        df.loc[long, "text"] = df.loc[long, "text"].str[-cfg.data.max_chars:]
        info(f"{key}: {value}: {int(long.sum()):,} document(s) longer than data.max_chars="
             f"{cfg.data.max_chars:,} keep only their last {cfg.data.max_chars:,} characters")
    return df


def _split(df: pd.DataFrame, pct: float, seed: int, stratify: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    try:
        return train_test_split(df, test_size=pct, random_state=seed, stratify=df["label"] if stratify else None)
    except ValueError:  # a class too rare to stratify, or too few rows: plain random split
        return train_test_split(df, test_size=max(pct, 1 / len(df)), random_state=seed)


def class_weights(setting, ys: np.ndarray, labels: list[str]) -> list[float] | None:
    """One loss weight per class for `train.class_weights`: balanced (n / (classes * count), scikit-learn's
    rule), or the given {label: weight} with 1 for the rest; a label that is not a class is refused. For a
    multi-label task (`ys` a 0/1 matrix) the weight of each label's positives (BCE's pos_weight): balanced
    is negatives / positives."""
    if setting is None:
        return None
    if setting == "balanced" and ys.ndim == 2:
        pos = ys.sum(0)
        return [float((len(ys) - p) / p) if p else 1.0 for p in pos]
    if setting == "balanced":
        counts = np.bincount(ys, minlength=len(labels))
        return [float(len(ys) / (len(labels) * c)) if c else 0.0 for c in counts]
    unknown = sorted(set(setting) - set(labels))
    if unknown:
        raise UlmfitError(f"train.class_weights: {', '.join(map(repr, unknown))} "
                          f"{'is not a class' if len(unknown) == 1 else 'are not classes'} of data.train; "
                          f"its classes are: {', '.join(labels)}")
    return [float(setting.get(lbl, 1.0)) for lbl in labels]


def _outputs(learn, dl) -> np.ndarray:
    with learn.no_bar():
        out, _ = learn.get_preds(dl=dl)  # fastai undoes SortedDL's order and applies the loss's activation
    return out.float().numpy()


def _scores(task: str, outputs: np.ndarray, ys: np.ndarray, labels: list[str], prefix: str, thresholds) -> dict:
    figures = task_scores(task, ys, outputs, labels, thresholds)  # the figures `ulmfit evaluate` reports
    return {f"{prefix}_{k}": figures[k] for k in (*HEADLINE[task], "n")}


def _label_names(cfg: ClassifierConfig, train: pd.DataFrame) -> list[str]:
    """The model's outputs, read from the training file: its classes, its labels, or the regression target."""
    task = cfg.task
    if task == REGRESSION:
        return [cfg.data.label_col]
    if task == SINGLE:
        labels = sorted(train["label"].unique())
        if len(labels) < 2:
            raise UlmfitError(f"data.train: {cfg.data.train}: column '{cfg.data.label_col}' has a single class "
                              f"({labels[0]!r}); a classifier needs at least two")
        return labels
    if isinstance(cfg.data.label_col, list):
        labels = cfg.data.label_col
    else:
        labels = sorted({x for s in train["label"] for x in s})
    if not any(len(s) for s in train["label"]):
        raise UlmfitError(f"data.train: {cfg.data.train}: every document has an empty label set (no 1 in "
                          f"data.label_col, or nothing between the data.label_delim marks); a multi-label "
                          f"classifier needs documents with labels")
    return labels


def read_splits(cfg: ClassifierConfig, with_test: bool = True):
    """(labels, train, valid, test) as the classifier trains on them: the files read for the task, the
    validation split made from `data.train` when there is no `data.valid`; test None without `with_test`."""
    task = cfg.task
    train = _read(cfg, "data.train")
    labels = _label_names(cfg, train)
    if cfg.data.valid:
        valid = _read(cfg, "data.valid")
    else:
        train, valid = _split(train, cfg.data.valid_pct, cfg.run.seed, stratify=task == SINGLE)
        unseen = sorted(set(labels) - set(train["label"])) if task == SINGLE else []
        if unseen:  # a class with one row went to the validation split: it is never trained on
            info(f"warning: data.train: {cfg.data.train}: class(es) {', '.join(map(repr, unseen))} have too few rows "
                 f"to be in both splits and are not trained on; add rows, or give data.valid")
    test = _read(cfg, "data.test") if cfg.data.test and with_test else None
    for key, part in (("data.valid", valid if cfg.data.valid else None), ("data.test", test)):
        if part is not None and task != REGRESSION:
            check_labels(part["label"].tolist(), labels, f"{key}: {getattr(cfg.data, key[5:])}")
    return labels, train, valid, test


def plan(resolved: Resolved, run: Run, cbs=()) -> Plan:
    cfg: ClassifierConfig = resolved.cfg
    upstream = resolved.upstream
    device = start(cfg.run)
    task = cfg.task
    labels, train, valid, test = read_splits(cfg)
    parts = [train, valid] + ([test] if test is not None else [])
    ys = [encode_targets(task, labels, p) for p in parts]
    if task == MULTI:
        never = [lbl for lbl, n in zip(labels, ys[0].sum(0)) if not n]
        if never:
            info(f"warning: data.train: {cfg.data.train}: label(s) {', '.join(map(repr, never))} are on no "
                 f"training document and cannot be learned")
    sp_model = upstream.sp_model if upstream is not None else None
    toks = distributed.from_main(  # tokenized once, on rank 0, in a multi-process run
        lambda: tokenize([t for p in parts for t in p["text"]], workers=cfg.data.workers, sp_model=sp_model,
                           lang=cfg.data.lang))
    bounds = np.cumsum([0] + [len(p) for p in parts])
    toks = [toks[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    vocab = upstream.vocab if upstream is not None else build_vocab(toks[0], cfg.data.max_vocab, cfg.data.min_freq)
    ids = [orient_docs(numericalize(t, vocab), cfg.data.backwards) for t in toks]
    info(f"classifier: {len(train)} train / {len(valid)} valid" + (f" / {len(test)} test" if test is not None else "")
         + " documents, " + {SINGLE: f"{len(labels)} classes", MULTI: f"{len(labels)} labels (multi-label)",
                             REGRESSION: f"regression of '{labels[0]}'"}[task])

    run.write_json("vocab.json", vocab)
    run.write_json("labels.json", labels)
    run.copy_in(sp_model, SP_MODEL)
    t = cfg.train
    weights = class_weights(t.class_weights, ys[0], labels)
    dls = clf_dls(ids[0], ys[0], ids[1], ys[1], vocab, t.bs, t.bptt, device, cfg.run.seed,
                  balanced=t.sampler == "balanced")
    cbs = (*cbs, *logger_callbacks(cfg.run, run))
    learn = clf_learner(dls, cfg.model.sizes(), len(labels), cfg.model, t, cfg.run.precision, run, "train-clf", cbs,
                        weights, task)
    for i, st in enumerate(t.stages):
        check_freeze_to(learn, st.freeze_to, f"train.stages[{i}]")
    if upstream is not None:
        load_encoder(learn, upstream)
    phases = [Phase(f"freeze_to {st.freeze_to}", st.epochs or t.epochs,
                    slice((st.lr or t.lr) / t.lr_div, st.lr or t.lr), lambda lrn, n=st.freeze_to: lrn.freeze_to(n))
              for st in t.stages]

    def finish(ckpt) -> dict:
        kept = ckpt.load_best() if t.keep == "best" else None  # model.pth, and every figure below, of that epoch
        outputs = [_outputs(learn, dls.valid)]
        if test is not None:
            outputs.append(_outputs(learn, clf_dl(ids[2], ys[2], vocab, t.bs * 2, t.bptt, device)))
        cuts = choose_thresholds(ys[1], outputs[0], cfg.model.threshold) if task == MULTI else None
        results = {"task": task, "labels": labels, "pretrained_encoder": upstream is not None,
                   "kept_epoch": kept or ckpt.last_epoch, "keep": t.keep if kept else "last", "monitor": t.monitor,
                   "best_epoch": ckpt.best_epoch, f"best_{t.monitor}": ckpt.best, "stopped_early": ckpt.stopped,
                   "class_weights": None if weights is None else dict(zip(labels, weights)), "sampler": t.sampler}
        if cuts is not None:
            results["thresholds"] = dict(zip(labels, cuts.tolist()))
            run.write_json(THRESHOLDS_FILE, results["thresholds"])
        for name, out, y in zip(("valid", "test"), outputs, ys[1:]):
            results.update(_scores(task, out, y, labels, name, cuts))
        if cfg.data.baseline and distributed.is_main():
            from ulmfit_cli.baseline import tfidf_baseline
            pairs = [(p["text"].tolist(), y) for p, y in zip(parts, ys)]
            results.update(tfidf_baseline(pairs[0], pairs[1], pairs[2] if test is not None else None, labels, task,
                                          cfg.model.threshold))
            first = HEADLINE[task][0]
            shown = [f"{name} {first} {results[f'baseline_{name}_{first}']:.4f}" for name in ("valid", "test")
                     if f"baseline_{name}_{first}" in results]
            info(f"baseline ({results['baseline']}, same splits): {', '.join(shown)}")
        run.save_weights("model.pth", learn.model.state_dict())
        run.write_json("results.json", results)
        return results

    return Plan(learn, phases, data_signature(vocab + labels, *ids[0], ys[0], *ids[1], ys[1]), finish)
