"""Stage 2: fine-tune a pretrained language model on the target corpus.

The pretrained embeddings are remapped to the target vocabulary (fastai's `match_embeds`),
then, as in the paper: `frozen_epochs` with only the last layer group trainable, and
`epochs` unfrozen with discriminative rates `slice(lr / lr_div, lr)`, both `fit_one_cycle`.
Without `init.from_run` the LM is trained from scratch (the paper's no-pretraining ablation).
"""
from __future__ import annotations

from ulmfit_cli import paths
from ulmfit_cli.checkpoints import Phase, checkpointer, fit_phases
from ulmfit_cli.config import FinetuneConfig
from ulmfit_cli.console import info
from ulmfit_cli.corpus.tables import read_texts
from ulmfit_cli.corpus.tokenize import SP_MODEL
from ulmfit_cli.learners import lm_learner, transfer_lm
from ulmfit_cli.runs import ARCH_KEYS, Run, UpstreamRun
from ulmfit_cli.stages.lm_common import lm_data, save_lm, split_docs, start


def run(cfg: FinetuneConfig, run: Run, upstream: UpstreamRun | None) -> dict:
    """`upstream`: the run `init.from_run` names (read and checked by the CLI), whose sizes `cfg.model` has."""
    device = start(cfg)
    arch = cfg.model.model_dump(include=set(ARCH_KEYS))
    train_path = paths.resolve(cfg.data.train, "data.train")
    texts = read_texts(train_path, "data.train", cfg.data.text_col, encoding=cfg.data.encoding,
                       errors=cfg.data.encoding_errors)["text"].tolist()
    if cfg.data.valid:
        valid = read_texts(paths.resolve(cfg.data.valid, "data.valid"), "data.valid", cfg.data.text_col,
                           encoding=cfg.data.encoding, errors=cfg.data.encoding_errors)
        train, valid = texts, valid["text"].tolist()
    else:
        train, valid = split_docs(texts, cfg.data.valid_pct, cfg.run.seed, f"data.train: {train_path}")
    sp_model = upstream.sp_model if upstream is not None else None  # subword runs keep their tokenizer
    dls, vocab, sig, stats = lm_data(train, valid, cfg.data, cfg.train, device, train_path.name, sp_model,
                                 cfg.run.seed)
    run.write_json("vocab.json", vocab)
    run.copy_in(sp_model, SP_MODEL)
    learn = lm_learner(dls, arch, cfg.model.drop_mult, cfg.train, cfg.run.precision, run, "finetune-lm")
    t = cfg.train
    if upstream is not None:
        stats["vocab_overlap"] = transfer_lm(learn, upstream, vocab)
        info(f"init.from_run: {upstream.path}: {stats['vocab_overlap']:.1%} of the new vocab was pretrained")
    ckpt = checkpointer(run, cfg, sig)
    learn.add_cb(ckpt)
    fit_phases(learn, ckpt, [
        Phase("frozen", t.frozen_epochs if upstream is not None else 0, t.frozen_lr, lambda lrn: lrn.freeze()),
        Phase("unfrozen", t.epochs, slice(t.lr / t.lr_div, t.lr), lambda lrn: lrn.unfreeze()),
    ])
    return save_lm(run, learn, stats)
