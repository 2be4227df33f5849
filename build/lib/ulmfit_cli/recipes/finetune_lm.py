"""Stage 2: fine-tune a pretrained language model on the target corpus.

The pretrained embeddings are remapped to the target vocabulary (fastai's `match_embeds`),
then, as in the paper: `frozen_epochs` with only the last layer group trainable, and
`epochs` unfrozen with discriminative rates `slice(lr / lr_div, lr)`, both `fit_one_cycle`.
Without `init.from_run` the LM is trained from scratch (the paper's no-pretraining ablation).
"""
from __future__ import annotations

from ulmfit_cli.config import FinetuneConfig
from ulmfit_cli.console import info
from ulmfit_cli.files import input_path
from ulmfit_cli.corpus.tables import read_documents, read_texts
from ulmfit_cli.layout import SP_MODEL, VOCAB
from ulmfit_cli.resolve import Resolved
from ulmfit_cli.runs import Run
from ulmfit_cli.recipes.lm_common import lm_data, save_lm, split_docs
from ulmfit_cli.train.callbacks import logger_callbacks
from ulmfit_cli.train.checkpoints import Phase, Plan
from ulmfit_cli.train.device import start
from ulmfit_cli.train.learners import lm_learner, transfer_lm


def plan(resolved: Resolved, run: Run, cbs=()) -> Plan:
    cfg: FinetuneConfig = resolved.cfg
    upstream, device, d = resolved.upstream, start(cfg.run), cfg.data
    train_path = input_path(d.train, "data.train")
    texts = read_texts(train_path, "data.train", d.text_col, encoding=d.encoding, errors=d.encoding_errors)
    if d.valid:
        valid = read_texts(input_path(d.valid, "data.valid"), "data.valid", d.text_col, encoding=d.encoding,
                           errors=d.encoding_errors)
        train, valid = texts["text"].tolist(), valid["text"].tolist()
    else:
        train, valid = split_docs(texts["text"].tolist(), d.valid_pct, cfg.run.seed,
                                  f"data.train: {train_path}")
    extra = read_documents(d.extra_text, "data.extra_text", d.text_col, d.encoding, d.encoding_errors)
    # the paper fine-tunes on all the target task's text; held out from nothing, validated on nothing
    if extra:
        info(f"data.extra_text: {len(extra):,} more document(s) in the training split (their labels unused)")
        train = train + extra
    sp_model = upstream.sp_model if upstream is not None else None  # subword runs keep their tokenizer
    dls, vocab, sig, stats = lm_data(train, valid, cfg, device, train_path.name, sp_model)
    run.write_json(VOCAB, vocab)
    run.copy_in(sp_model, SP_MODEL)
    cbs = (*cbs, *logger_callbacks(cfg.run, run))
    learn = lm_learner(dls, cfg.model.sizes(), cfg.model.drop_mult, cfg.train, cfg.run.precision, run,
                       "finetune-lm", cbs)
    t = cfg.train
    if upstream is not None:
        stats["vocab_overlap"] = transfer_lm(learn, upstream, vocab)
        info(f"init.from_run: {upstream.path}: {stats['vocab_overlap']:.1%} of the new vocab was pretrained")
    return Plan(learn, [
        Phase("frozen", t.frozen_epochs if upstream is not None else 0, t.frozen_lr,
              lambda lrn: lrn.freeze()),
        Phase("unfrozen", t.epochs, slice(t.lr / t.lr_div, t.lr), lambda lrn: lrn.unfreeze()),
    ], sig, lambda outcome: save_lm(run, learn, stats))
