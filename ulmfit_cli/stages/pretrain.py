"""Stage 1: pretrain an AWD-LSTM language model on a Wikipedia dump or plain text.

The corpus goes through the token store (`ulmfit prepare`, built here when missing and reused
from the cache otherwise), and fastai's `language_model_learner(..., pretrained=False)` trains
on its memory-mapped tokens with `fit_one_cycle`.
"""
from __future__ import annotations

from ulmfit_cli import distributed
from ulmfit_cli.checkpoints import Phase, checkpointer, data_signature, fit_phases
from ulmfit_cli.config import PretrainConfig
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.corpus.prepare import prepare
from ulmfit_cli.corpus.tokenize import SP_MODEL
from ulmfit_cli.learners import lm_learner
from ulmfit_cli.loaders import store_lm_dls, stream_lm_dls
from ulmfit_cli.runs import ARCH_KEYS, Run
from ulmfit_cli.stages.lm_common import save_lm, start

STORE_STATS = ("train_docs", "valid_docs", "train_tokens", "valid_tokens", "vocab_size", "unk_rate")


def run(cfg: PretrainConfig, run: Run, upstream=None) -> dict:
    """`upstream` is always None: pretraining starts from random weights."""
    device = start(cfg)
    built = []
    distributed.from_main(lambda: built.append(prepare(cfg.data, cfg.run.seed)))  # rank 0 builds the store,
    store = built[0] if built else prepare(cfg.data, cfg.run.seed)                # the others find it cached
    t = cfg.train
    if t.loader == "stream":
        dls = stream_lm_dls(store.tokens("train"), store.tokens("valid"), store.vocab, t.bs, t.bptt, device,
                            cfg.run.seed, t.random_bptt, store.offsets("train"), cfg.data.backwards)
    elif cfg.data.backwards:
        raise UlmfitError("data.backwards needs train.loader: stream")
    else:
        dls = store_lm_dls(store, t.bs, t.bptt, device)
    run.write_json("vocab.json", store.vocab)
    run.copy_in(store.sp_model, SP_MODEL)
    arch = cfg.model.model_dump(include=set(ARCH_KEYS))
    learn = lm_learner(dls, arch, cfg.model.drop_mult, cfg.train, cfg.run.precision, run, "pretrain")
    ckpt = checkpointer(run, cfg, data_signature(store.vocab, store.path.name))
    learn.add_cb(ckpt)
    fit_phases(learn, ckpt, [Phase("", t.epochs, t.lr)])
    return save_lm(run, learn, {"token_store": str(store.path), **{k: store.stats[k] for k in STORE_STATS}})
