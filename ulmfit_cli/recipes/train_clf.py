"""Stage 3: train a text classifier on a fine-tuned (or pretrained) encoder.

fastai's `text_classifier_learner` (concat pooling, head `model.lin_ftrs`) with the
upstream encoder and vocabulary, trained by gradual unfreezing: each entry of
`train.stages` calls `freeze_to` and `fit_one_cycle(epochs, slice(lr / lr_div, lr))`. The recipe composes
the classifier layer (`ulmfit_cli.classify`): the task (single-label, multi-label, regression) decides the
targets, the loss and the figures; the splits are read there, scored there (a multi-label model's
per-label thresholds chosen on the validation set: thresholds.json), and a TF-IDF + linear baseline is
fitted on the same splits and reported beside it (`data.baseline`).
"""
from __future__ import annotations

import numpy as np

from ulmfit_cli.classify.baseline import tfidf_baseline
from ulmfit_cli.classify.scoring import headline, score
from ulmfit_cli.classify.splits import read_splits
from ulmfit_cli.config import ClassifierConfig
from ulmfit_cli.console import info
from ulmfit_cli.corpus.direction import orient_docs
from ulmfit_cli.corpus.tokenize import build_vocab, numericalize, tokenize
from ulmfit_cli.layout import CLASSIFIER, LABELS, RESULTS, SP_MODEL, THRESHOLDS, VOCAB
from ulmfit_cli.resolve import Resolved
from ulmfit_cli.runs import Run
from ulmfit_cli.train import distributed
from ulmfit_cli.train.callbacks import logger_callbacks
from ulmfit_cli.train.checkpoints import Monitor, Outcome, Phase, Plan
from ulmfit_cli.train.device import start
from ulmfit_cli.train.fingerprint import data_signature
from ulmfit_cli.train.learners import check_freeze_to, clf_learner, load_encoder
from ulmfit_cli.train.loaders import clf_dl, clf_dls


def _outputs(learn, dl) -> np.ndarray:
    with learn.no_bar():
        out, _ = learn.get_preds(dl=dl)  # fastai undoes SortedDL's order and applies the loss's activation
    return out.float().numpy()


def plan(resolved: Resolved, run: Run, cbs=()) -> Plan:
    cfg: ClassifierConfig = resolved.cfg
    upstream, device, task = resolved.upstream, start(cfg.run), cfg.task
    labels, train, valid, test = read_splits(cfg)
    parts = [train, valid] + ([test] if test is not None else [])
    ys = [task.targets(labels, p) for p in parts]
    never = task.unlearnable(labels, ys[0])
    if never:
        info(f"warning: data.train: {cfg.data.train}: label(s) {', '.join(map(repr, never))} are on no "
             f"training document and cannot be learned")
    sp_model = upstream.sp_model if upstream is not None else None
    toks = distributed.from_main(  # tokenized once, on rank 0, in a multi-process run
        lambda: tokenize([t for p in parts for t in p["text"]], workers=cfg.data.workers, sp_model=sp_model,
                         lang=cfg.data.lang))
    bounds = np.cumsum([0] + [len(p) for p in parts])
    toks = [toks[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    vocab = (upstream.vocab if upstream is not None
             else build_vocab(toks[0], cfg.data.max_vocab, cfg.data.min_freq))
    ids = [orient_docs(numericalize(t, vocab), cfg.data.backwards) for t in toks]
    info(f"classifier: {len(train)} train / {len(valid)} valid"
         + (f" / {len(test)} test" if test is not None else "")
         + f" documents, {task.describe(labels)}")

    run.write_json(VOCAB, vocab)
    run.write_json(LABELS, labels)
    run.copy_in(sp_model, SP_MODEL)
    t = cfg.train
    weights = task.class_weights(t.class_weights, ys[0], labels)
    dls = clf_dls(ids[0], ys[0], ids[1], ys[1], vocab, t.bs, t.bptt, device, cfg.run.seed,
                  balanced=t.sampler == "balanced")
    cbs = (*cbs, *logger_callbacks(cfg.run, run))
    learn = clf_learner(dls, cfg.model.sizes(), len(labels), cfg.model, t, cfg.run.precision, run,
                        "train-clf", cbs, weights, task.loss_and_metrics)
    for i, st in enumerate(t.stages):
        check_freeze_to(learn, st.freeze_to, f"train.stages[{i}]")
    if upstream is not None:
        load_encoder(learn, upstream)
    phases = [Phase(f"freeze_to {st.freeze_to}", st.epochs or t.epochs,
                    slice((st.lr or t.lr) / t.lr_div, st.lr or t.lr),
                    lambda lrn, n=st.freeze_to: lrn.freeze_to(n))
              for st in t.stages]

    def finish(outcome: Outcome) -> dict:
        # model.pth, and every figure below, of that epoch
        kept = outcome.load_best() if t.keep == "best" else None
        # loaders made when scored: a new one draws from `random`
        splits = {"valid": (lambda: dls.valid, ys[1])}
        if test is not None:
            splits["test"] = (lambda: clf_dl(ids[2], ys[2], vocab, t.bs * 2, t.bptt, device), ys[2])
        cuts, figures = score(lambda loader: _outputs(learn, loader()), splits, task, labels,
                              fixed=cfg.model.threshold)
        results = {"task": task.name, "labels": labels, "pretrained_encoder": upstream is not None,
                   "kept_epoch": kept or outcome.last_epoch, "keep": t.keep if kept else "last",
                   "monitor": t.monitor, "best_epoch": outcome.best_epoch, f"best_{t.monitor}": outcome.best,
                   "stopped_early": outcome.stopped,
                   "class_weights": None if weights is None else dict(zip(labels, weights)),
                   "sampler": t.sampler}
        if cuts is not None:
            results["thresholds"] = dict(zip(labels, cuts.tolist()))
            run.write_json(THRESHOLDS, results["thresholds"])
        results.update(headline(task, figures))
        if cfg.data.baseline and distributed.is_main():
            pairs = [(p["text"].tolist(), y) for p, y in zip(parts, ys)]
            results.update(tfidf_baseline(pairs[0], pairs[1], pairs[2] if test is not None else None, labels,
                                          task, cfg.model.threshold))
            first = task.headline[0]
            shown = [f"{name} {first} {results[f'baseline_{name}_{first}']:.4f}" for name in ("valid", "test")
                     if f"baseline_{name}_{first}" in results]
            info(f"baseline ({results['baseline']}, same splits): {', '.join(shown)}")
        run.save_weights(CLASSIFIER, learn.model.state_dict())
        run.write_json(RESULTS, results)
        return results

    monitor = Monitor(t.monitor, task.monitors[t.monitor], task.lower_is_better(t.monitor))
    return Plan(learn, phases, data_signature(vocab + labels, *ids[0], ys[0], *ids[1], ys[1]), finish,
                monitor)
