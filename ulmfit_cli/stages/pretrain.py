"""Stage 1: pretrain an AWD-LSTM language model on a Wikipedia dump or plain text.

fastai's `language_model_learner(..., pretrained=False)` trained with `fit_one_cycle`.
"""
from __future__ import annotations

from ulmfit_cli import paths
from ulmfit_cli.config import PretrainConfig
from ulmfit_cli.corpus.sources import pretrain_documents
from ulmfit_cli.learners import lm_learner
from ulmfit_cli.runs import ARCH_KEYS, Run
from ulmfit_cli.stages.lm_common import lm_data, save_lm, split_docs, start


def run(cfg: PretrainConfig, run: Run) -> dict:
    device = start(cfg)
    source = paths.resolve(cfg.data.source, "data.source")
    docs, valid = pretrain_documents(source, cfg.data.max_docs, cfg.data.min_doc_chars, cfg.data.encoding)
    train, valid = (docs, valid) if valid is not None else split_docs(docs, cfg.data.valid_pct, cfg.run.seed,
                                                                                   f"data.source: {source}")
    dls, vocab, stats = lm_data(train, valid, cfg.data, cfg.train, device, source.name)
    run.write_json("vocab.json", vocab)
    arch = cfg.model.model_dump(include=set(ARCH_KEYS))
    learn = lm_learner(dls, arch, cfg.model.drop_mult, cfg.train, cfg.run.precision, run, "pretrain")
    if cfg.train.epochs:
        learn.fit_one_cycle(cfg.train.epochs, cfg.train.lr)
    return save_lm(run, learn, stats)
