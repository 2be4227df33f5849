"""Shipping a classifier: the fast inference path (no DataLoader, token-sized batches) against the stock
SortedDL path, the ONNX export and its torch-free runtime, int8, and the model card; for every task, blends
with the baseline, and ensembles."""
from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY, write_tasks_csv

STAGES = "train.stages=[{freeze_to: -1, epochs: 2, lr: 0.05}, {freeze_to: 0, epochs: 3, lr: 0.02}]"
TASKS = {"multi-label": ("data.label_col=[pos, neg]",),
         "regression": ("data.task=regression", "data.label_col=score", "model.y_range=[0.5, 4.5]")}


@pytest.fixture(scope="module")
def models(chain, tmp_path_factory):
    """The chain's single-label classifiers (forward, backward) and a multi-label and a regression one, each
    blended with its baseline (model.blend: auto, min_steps off so that the tiny runs stay short)."""
    from ulmfit_cli import api
    tmp = tmp_path_factory.mktemp("deploy")
    train, test = write_tasks_csv(tmp / "train.csv", 160, seed=1), write_tasks_csv(tmp / "test.csv", 40, seed=2)
    out = {"single-label": chain["clf"], "backward": chain["clf-bwd"], "tmp": tmp, "test": test,
           "single_test": chain["test"]}
    for name, sets in TASKS.items():
        api.train("train-clf", [TINY], [f"data.train={train}", f"data.test={test}", f"init.from_run={chain['ft']}",
                                        STAGES, "train.min_steps=null", "model.blend=0.5", *sets], run_dir=tmp / name)
        out[name] = tmp / name
    return out


def _texts(models, name) -> list[str]:
    """The test texts, and some longer ones that span several bptt chunks (but stay within max_len)."""
    texts = pd.read_csv(models["single_test" if name in ("single-label", "backward") else "test"])["text"].tolist()
    rng = random.Random(0)
    return texts + [" ".join(rng.choice(texts) for _ in range(rng.randint(2, 9))) for _ in range(30)]


def _dataloader_outputs(clf, texts, pad=None) -> np.ndarray:
    """The path inference took before: fastai's SortedDL (bs 64, worker processes), padded by `pad` (default
    the training loader's, `loaders.clf_dl`; fastai's `pad_input_chunk` is today's), its longest-first order
    undone as get_preds undoes it."""
    from ulmfit_cli.corpus.direction import orient_docs
    from ulmfit_cli.train.loaders import clf_dl
    ids = clf.token_ids(texts)
    dl = clf_dl(orient_docs(ids, clf.spec.backwards), np.zeros(len(ids), dtype=np.int64), clf.vocab, 64,
                clf.spec.bptt, torch.device("cpu"))
    if pad is not None:
        dl = dl.new(before_batch=pad)
    order, out, done = np.asarray(dl.get_idxs()), np.zeros((len(ids), len(clf.labels)), np.float32), 0
    with torch.no_grad():
        for x, _ in dl:
            out[order[done:done + len(x)]] = clf.task.activation(clf.model(x)[0]).numpy()
            done += len(x)
    return out


def _fastai_pad(clf):
    from functools import partial

    from fastai.text.data import pad_input_chunk
    return partial(pad_input_chunk, pad_idx=clf.index["xxpad"], pad_first=True, seq_len=clf.spec.bptt)


@pytest.mark.parametrize("name", ["single-label", "backward", "multi-label", "regression"])
def test_fast_path_equals_the_dataloader_path(models, name):
    """Each text's outputs do not depend on its batch: the fast path in batches of every shape, one text at a
    time, and the DataLoader path (SortedDL, fastai's padding rounded to whole bptt chunks) all agree; and,
    where fastai's own padding gives each text its outputs (texts of one bptt chunk), with that too."""
    from ulmfit_cli import load_classifier
    clf = load_classifier(models[name], device="cpu")
    texts = _texts(models, name)
    alone = np.concatenate([_dataloader_outputs(clf, [t], _fastai_pad(clf)) for t in texts])
    assert np.allclose(_dataloader_outputs(clf, texts), alone, atol=1e-6, rtol=0)
    ids = clf.token_ids(texts)
    for bs, max_tokens in ((256, 32_768), (7, 100), (1, 1)):
        assert np.allclose(clf.proba_of_ids(ids, bs=bs, max_tokens=max_tokens), alone, atol=1e-6, rtol=0)
    short = [t for t, i in zip(texts, ids) if len(i) <= clf.spec.bptt]
    assert len(short) >= 30
    assert np.allclose(clf.predict_proba(short, bs=8) if clf.blend is None else
                       clf.proba_of_ids(clf.token_ids(short), bs=8),
                       _dataloader_outputs(clf, short, _fastai_pad(clf)), atol=1e-6, rtol=0)
    if clf.blend is not None:  # blended: the model's part, then the baseline's
        assert np.allclose(clf.predict_proba(texts), clf.blended(alone, texts), atol=1e-6, rtol=0)


def test_fastai_padding_skips_short_texts_batched_with_longer_ones(models):
    """Why the padding is rounded up to whole chunks: with fastai's pad_input_chunk, a batch whose longest
    text is not a whole number of bptt chunks can hold a text that ended before the last chunk's first
    column; SentenceEncoder runs that chunk on the rows up to the last one that has begun, so a shorter text
    below it is never read and gets the outputs of zeros."""
    from ulmfit_cli import load_classifier
    clf = load_classifier(models["single-label"], device="cpu")
    texts = _texts(models, "single-label")
    alone = np.concatenate([_dataloader_outputs(clf, [t], _fastai_pad(clf)) for t in texts])
    wrong = np.abs(_dataloader_outputs(clf, texts, _fastai_pad(clf)) - alone).max(1) > 1e-3
    assert 0 < wrong.sum() < len(texts)


def test_ensemble_fast_path_equals_the_mean_of_stock_outputs(models):
    from ulmfit_cli import load_classifier
    both = load_classifier(models["single-label"], models["backward"], device="cpu")
    texts = _texts(models, "single-label")
    stock = np.mean([m.blended(_dataloader_outputs(m, texts), texts) for m in both.members], axis=0)
    assert np.allclose(both.predict_proba(texts, bs=5, max_tokens=200), stock, atol=1e-6, rtol=0)
