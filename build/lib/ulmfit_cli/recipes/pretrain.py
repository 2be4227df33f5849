"""Stage 1: pretrain an AWD-LSTM language model on a Wikipedia dump or plain text.

The corpus goes through the token store (`ulmfit prepare`, built here when missing and reused
from the cache otherwise), and fastai's `language_model_learner(..., pretrained=False)` trains
on its memory-mapped tokens with `fit_one_cycle`.
"""
from __future__ import annotations

from ulmfit_cli.config import PretrainConfig
from ulmfit_cli.layout import SP_MODEL, VOCAB
from ulmfit_cli.resolve import Resolved
from ulmfit_cli.corpus.prepare import prepare
from ulmfit_cli.runs import Run
from ulmfit_cli.recipes.lm_common import save_lm
from ulmfit_cli.train import distributed
from ulmfit_cli.train.callbacks import logger_callbacks
from ulmfit_cli.train.checkpoints import Phase, Plan
from ulmfit_cli.train.device import start
from ulmfit_cli.train.fingerprint import data_signature
from ulmfit_cli.train.learners import lm_learner
from ulmfit_cli.train.loaders import lm_loaders

STORE_STATS = ("train_docs", "valid_docs", "train_tokens", "valid_tokens", "vocab_size", "unk_rate")
STORE_PIECE_TOKENS = 1 << 20  # fastai's LMDataLoader shuffles a store in runs of ~1M tokens, not per article


def plan(resolved: Resolved, run: Run, cbs=()) -> Plan:
    cfg: PretrainConfig = resolved.cfg  # pretraining starts from random weights: no upstream run
    device = start(cfg.run)
    # rank 0 builds (or finds) the store
    store = distributed.from_main(lambda: prepare(cfg.data, cfg.run.seed))
    dls = lm_loaders(store.split("train"), store.split("valid"), store.vocab, cfg.train, device, cfg.run.seed,
                     cfg.data.backwards, piece_tokens=STORE_PIECE_TOKENS)
    run.write_json(VOCAB, store.vocab)
    run.copy_in(store.sp_model, SP_MODEL)
    cbs = (*cbs, *logger_callbacks(cfg.run, run))
    learn = lm_learner(dls, cfg.model.sizes(), cfg.model.drop_mult, cfg.train, cfg.run.precision, run,
                       "pretrain", cbs)
    stats = {"token_store": str(store.path), **{k: store.stats[k] for k in STORE_STATS}}
    return Plan(learn, [Phase("", cfg.train.epochs, cfg.train.lr)],
                data_signature(store.vocab, store.path.name), lambda outcome: save_lm(run, learn, stats))
