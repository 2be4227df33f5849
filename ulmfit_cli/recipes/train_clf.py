"""Stage 3: train a text classifier on a fine-tuned (or pretrained) encoder.

fastai's `text_classifier_learner` (concat pooling, head `model.lin_ftrs`) with the upstream encoder and
vocabulary, trained by gradual unfreezing: each entry of `train.stages` calls `freeze_to` and
`fit_one_cycle(epochs, slice(lr / lr_div, lr))`; a small training set trains at least `train.min_steps`
steps (each epoch goes several times over the training documents). The recipe composes the classifier layer
(`ulmfit_cli.classify`): the task decides the targets, the loss and the figures; the splits are read there
and scored there (a multi-label model's per-label thresholds chosen on the validation set:
thresholds.json), and a TF-IDF + linear baseline is fitted on the same splits and reported beside it
(`data.baseline`). Once trained:

1. self-training (`data.unlabelled`, `train.self_training_rounds`): the classifier labels the unlabelled
   texts, the most confident of each class join the training rows, and a new classifier is trained from
   the encoder; a round that does not raise the validation figure is dropped, and ends the rounds;
2. the blend (`model.blend`): w * classifier + (1 - w) * baseline, w chosen on the validation split; the
   headline figures (valid_*, test_*) are those of what `predict` uses, the classifier alone's are
   classifier_*, the baseline's baseline_*.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from fastai.torch_core import set_seed

from ulmfit_cli.classify.baseline import tfidf_baseline
from ulmfit_cli.classify.blend import GRID, choose_weight, mix
from ulmfit_cli.classify.scoring import headline, score
from ulmfit_cli.classify.self_training import confident_rows, unlabelled_pool
from ulmfit_cli.classify.splits import read_splits
from ulmfit_cli.config import ClassifierConfig
from ulmfit_cli.console import info
from ulmfit_cli.corpus.direction import orient_docs
from ulmfit_cli.corpus.tables import read_documents
from ulmfit_cli.corpus.text import numericalize, tokenize
from ulmfit_cli.corpus.tokenize import build_vocab
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.layout import (BLEND, CHECKPOINTS, CLASSIFIER, LABELS, PSEUDO_LABELS, RESULTS, SP_MODEL,
                               THRESHOLDS, VOCAB)
from ulmfit_cli.resolve import Resolved
from ulmfit_cli.runs import Run
from ulmfit_cli.train import distributed
from ulmfit_cli.train.callbacks import logger_callbacks
from ulmfit_cli.train.checkpoints import Monitor, Outcome, Phase, Plan, fit_in_memory
from ulmfit_cli.train.device import start
from ulmfit_cli.train.fingerprint import data_signature
from ulmfit_cli.train.learners import check_freeze_to, clf_learner, load_encoder
from ulmfit_cli.train.loaders import clf_dl, clf_dls


def _outputs(learn, dl) -> np.ndarray:
    with learn.no_bar():
        out, _ = learn.get_preds(dl=dl)  # fastai undoes SortedDL's order and applies the loss's activation
    return out.float().numpy()


def _unlabelled(cfg: ClassifierConfig, upstream) -> list[str]:
    """The texts of data.unlabelled (else of the upstream LM's data.extra_text), cut to data.max_chars as the
    labelled ones are."""
    d = cfg.data
    files, named = ((d.unlabelled, "data.unlabelled") if d.unlabelled or upstream is None
                    else (upstream.extra_text, f"init.from_run: {upstream.path}: data.extra_text"))
    if not files:
        raise UlmfitError("train.self_training_rounds: no unlabelled texts to label: set data.unlabelled "
                          "(or fine-tune the LM of init.from_run with data.extra_text)")
    texts = read_documents(files, named, d.text_col, d.encoding, d.encoding_errors)
    return [t[-d.max_chars:] for t in texts]


def schedule(cfg: ClassifierConfig, n_train: int, label: str = "") -> tuple[list[Phase], int, int]:
    """The phases of gradual unfreezing, how many passes over the `n_train` training documents an epoch
    makes so that the schedule has at least train.min_steps steps (1: as configured; the epochs, and so the
    validations that pick the best one, stay as configured), and the steps of the schedule as configured."""
    t = cfg.train
    epochs = [st.epochs or t.epochs for st in t.stages]
    steps = max(1, n_train // min(t.bs, n_train)) * sum(epochs)  # training drops the last partial batch
    passes = math.ceil(t.min_steps / steps) if t.min_steps and steps < t.min_steps else 1
    phases = [Phase(f"{label}freeze_to {st.freeze_to}", n, slice((st.lr or t.lr) / t.lr_div, st.lr or t.lr),
                    lambda lrn, k=st.freeze_to: lrn.freeze_to(k))
              for st, n in zip(t.stages, epochs)]
    return phases, passes, steps


def plan(resolved: Resolved, run: Run, cbs=()) -> Plan:
    cfg: ClassifierConfig = resolved.cfg
    upstream, device, task, t = resolved.upstream, start(cfg.run), cfg.task, cfg.train
    labels, train, valid, test = read_splits(cfg)
    parts = [train, valid] + ([test] if test is not None else [])
    ys = [task.targets(labels, p) for p in parts]
    never = task.unlearnable(labels, ys[0])
    if never:
        info(f"warning: data.train: {cfg.data.train}: label(s) {', '.join(map(repr, never))} are on no "
             f"training document and cannot be learned")
    rounds = t.self_training_rounds if t.self_training_rounds is not None else int(bool(cfg.data.unlabelled))
    pool: list[str] = []
    if rounds:
        if distributed.world().active:
            raise UlmfitError("data.unlabelled: self-training runs in one process; train without "
                              "torchrun/accelerate launch, or leave data.unlabelled out")
        pool, left_out = unlabelled_pool(_unlabelled(cfg, upstream), [x for p in parts for x in p["text"]])
        info(f"self-training: {len(pool):,} unlabelled document(s) for {rounds} round(s)"
             + (f" ({left_out:,} left out: repeated, or among the labelled, validation or test texts)"
                if left_out else ""))
        if not pool:
            raise UlmfitError(f"self-training: the unlabelled texts ({left_out:,}) are all repeats or among "
                              f"the labelled, validation or test texts: none is left to label")
    sp_model = upstream.sp_model if upstream is not None else None
    texts = [x for p in parts for x in p["text"]] + pool
    toks = distributed.from_main(  # tokenized once, on rank 0, in a multi-process run
        lambda: tokenize(texts, workers=cfg.data.workers, sp_model=sp_model, lang=cfg.data.lang))
    bounds = np.cumsum([0] + [len(p) for p in parts] + [len(pool)])
    toks = [toks[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    vocab = (upstream.vocab if upstream is not None
             else build_vocab(toks[0], cfg.data.max_vocab, cfg.data.min_freq))
    ids = [orient_docs(numericalize(tk, vocab), cfg.data.backwards) for tk in toks]
    pool_ids = ids.pop()
    info(f"classifier: {len(train)} train / {len(valid)} valid"
         + (f" / {len(test)} test" if test is not None else "")
         + f" documents, {task.describe(labels)}")

    run.write_json(VOCAB, vocab)
    run.write_json(LABELS, labels)
    run.copy_in(sp_model, SP_MODEL)
    weights = task.class_weights(t.class_weights, ys[0], labels)
    watched = task.monitor(t.monitor)
    monitor = Monitor(watched, task.monitors[watched], task.lower_is_better(watched))

    def learner(train_ids, train_y, extra_cbs, passes: int = 1):
        """A classifier learner on these training documents (each epoch `passes` times over them) and the
        validation split, from the encoder."""
        repeated_y = np.concatenate([train_y] * passes)  # along the texts (np.tile would repeat a row's labels)
        dls = clf_dls(train_ids * passes, repeated_y, ids[1], ys[1], vocab, t.bs, t.bptt, device, cfg.run.seed,
                      balanced=t.sampler == "balanced")
        learn = clf_learner(dls, cfg.model.sizes(), len(labels), cfg.model, t, cfg.run.precision, run,
                            "train-clf", (*extra_cbs, *logger_callbacks(cfg.run, run)), weights,
                            task.loss_and_metrics)
        if upstream is not None:
            load_encoder(learn, upstream)
        return learn

    phases, passes, steps = schedule(cfg, len(train))
    if passes > 1:
        info(f"train.min_steps={t.min_steps}: {len(train)} training documents make {steps} steps; each epoch "
             f"goes {passes} times over them")
    learn = learner(ids[0], ys[0], cbs, passes)
    for i, st in enumerate(t.stages):
        check_freeze_to(learn, st.freeze_to, f"train.stages[{i}]")

    def valid_figure(outputs: np.ndarray) -> float:
        _, figures = score(lambda o: o, {"valid": (outputs, ys[1])}, task, labels, fixed=cfg.model.threshold)
        return figures["valid"][task.selection]

    def self_train(first: np.ndarray) -> tuple[list[dict], np.ndarray]:
        """The rounds of self-training, and the validation outputs of the round kept (`first`: round 0's);
        `learn` ends up holding the kept round's weights."""
        sign = -1 if task.lower_is_better(task.selection) else 1
        best, best_outputs = valid_figure(first), first
        record = [{"round": 0, f"valid_{task.selection}": best, "pseudo_labels": 0, "kept": True}]
        chosen = []
        for r in range(1, rounds + 1):
            probs = _outputs(learn, clf_dl(pool_ids, np.zeros(len(pool_ids), dtype=np.int64), vocab, t.bs * 2,
                                           t.bptt, device))
            rows = confident_rows(probs, ys[0], t.self_training_top)
            pseudo = probs[rows].argmax(1)
            set_seed(cfg.run.seed + r, reproducible=cfg.run.deterministic)  # the same round on --resume
            round_phases, round_passes, _ = schedule(cfg, len(ids[0]) + len(rows), f"round {r}: ")
            round_learn = learner(ids[0] + [pool_ids[i] for i in rows], np.concatenate([ys[0], pseudo]), (),
                                  round_passes)
            info(f"self-training round {r}: {len(rows):,} pseudo-labelled documents join the "
                 f"{len(ids[0]):,} labelled ones")
            epoch = fit_in_memory(round_learn, round_phases, monitor, t.patience, run.path / CHECKPOINTS,
                                  keep_best=t.keep == "best")
            outputs = _outputs(round_learn, round_learn.dls.valid)
            value = valid_figure(outputs)
            kept = sign * value > sign * best
            record.append({"round": r, f"valid_{task.selection}": value, "pseudo_labels": int(len(rows)),
                           "kept_epoch": epoch, "kept": kept})
            chosen.append(pd.DataFrame({"round": r, "kept": kept, "text": [pool[i] for i in rows],
                                        "label": [labels[c] for c in pseudo],
                                        "confidence": probs[rows].max(1)}))
            info(f"self-training round {r}: valid {task.selection} {value:.4f} against {best:.4f}: "
                 + ("kept" if kept else "dropped (no better on the validation split); the rounds end"))
            if not kept:
                break
            best, best_outputs = value, outputs
            learn.model.load_state_dict(round_learn.model.state_dict())
        if run.writes:  # every round's pseudo-labels, for a person to read (and a test to check)
            pd.concat(chosen).to_csv(run.path / PSEUDO_LABELS, index=False)
        return record, best_outputs

    def finish(outcome: Outcome) -> dict:
        # model.pth, and every figure below, of that epoch
        kept = outcome.load_best() if t.keep == "best" else None
        results = {"task": task.name, "labels": labels, "pretrained_encoder": upstream is not None,
                   "kept_epoch": kept or outcome.last_epoch, "keep": t.keep if kept else "last",
                   "monitor": watched, "best_epoch": outcome.best_epoch, f"best_{watched}": outcome.best,
                   "stopped_early": outcome.stopped, "passes_per_epoch": passes,
                   "class_weights": None if weights is None else dict(zip(labels, weights)),
                   "sampler": t.sampler}
        # loaders made when scored: a new one draws from `random`
        outs = {"valid": _outputs(learn, learn.dls.valid)}
        if rounds:  # the validation outputs are then the kept round's
            results["self_training"], outs["valid"] = self_train(outs["valid"])
        truth = {"valid": ys[1]}
        if test is not None:
            outs["test"] = _outputs(learn, clf_dl(ids[2], ys[2], vocab, t.bs * 2, t.bptt, device))
            truth["test"] = ys[2]
        cuts, figures = score(lambda o: o, {n: (outs[n], truth[n]) for n in outs}, task, labels,
                              fixed=cfg.model.threshold)
        results.update(headline(task, figures, prefix="classifier_", sizes=False))
        base = None
        if cfg.data.baseline and distributed.is_main():
            pairs = [(p["text"].tolist(), y) for p, y in zip(parts, ys)]
            base_results, base, base_outs = tfidf_baseline(pairs[0], pairs[1], pairs[2] if test is not None
                                                           else None, labels, task, cfg.model.threshold,
                                                           cfg.model.y_range)
            results.update(base_results)
            if cfg.model.blend != "off":
                grid = GRID if cfg.model.blend == "auto" else [cfg.model.blend]
                choice = choose_weight(task, labels, ys[1], outs["valid"], base_outs["valid"],
                                       cfg.model.threshold, grid)
                results["blend_weight"] = choice.weight
                mixed = {n: mix(choice.weight, outs[n], base_outs[n]) for n in outs}
                cuts, figures = score(lambda o: o, {n: (mixed[n], truth[n]) for n in outs}, task, labels,
                                      thresholds=choice.thresholds)
                if choice.weight < 1:  # else predictions are the classifier's alone: nothing to load
                    if run.writes:
                        base.save(run.path)
                    run.write_json(BLEND, {"weight": choice.weight, "baseline": base.name})
        if cuts is not None:
            results["thresholds"] = dict(zip(labels, cuts.tolist()))
            run.write_json(THRESHOLDS, results["thresholds"])
        results.update(headline(task, figures))
        if base is not None:
            _summary(task, results)
        run.save_weights(CLASSIFIER, learn.model.state_dict())
        run.write_json(RESULTS, results)
        return results

    return Plan(learn, phases, data_signature(vocab + labels, *ids[0], ys[0], *ids[1], ys[1], *pool_ids),
                finish, monitor)


def _summary(task, results: dict) -> None:
    """The headline figure of what predict uses, the classifier alone and the baseline alone, per split."""
    first = task.headline[0]
    w = results.get("blend_weight")
    for split in ("valid", "test"):
        if f"{split}_{first}" not in results:
            continue
        rows = ([f"blend (w {w:.2f}) {results[f'{split}_{first}']:.4f}"] if w is not None else []) + [
            f"classifier {results[f'classifier_{split}_{first}']:.4f}",
            f"baseline ({results['baseline']}) {results[f'baseline_{split}_{first}']:.4f}"]
        info(f"{split} {first}: " + " | ".join(rows))
