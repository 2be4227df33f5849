"""Shipping a classifier: the fast inference path (no DataLoader, token-sized batches) against the stock
SortedDL path, the ONNX export and its torch-free runtime, int8, and the model card; for every task, blends
with the baseline, and ensembles."""
from __future__ import annotations

import json
import random
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import NO_TORCH, ROOT, TINY, write_tasks_csv

sys.path.insert(0, str(ROOT / "bench"))
from predict_speed import dataloader_outputs  # noqa: E402  (the DataLoader path; the bench times it)

STAGES = "train.stages=[{freeze_to: -1, epochs: 2, lr: 0.05}, {freeze_to: 0, epochs: 3, lr: 0.02}]"
TASKS = {"multi-label": ("data.label_col=[pos, neg]", "model.max_len=48"),  # texts longer than max_len too
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
    alone = np.concatenate([dataloader_outputs(clf, [t], _fastai_pad(clf)) for t in texts])
    assert np.allclose(dataloader_outputs(clf, texts), alone, atol=1e-6, rtol=0)
    ids = clf.token_ids(texts)
    for bs, max_tokens in ((256, 32_768), (7, 100), (1, 1)):
        assert np.allclose(clf.proba_of_ids(ids, bs=bs, max_tokens=max_tokens), alone, atol=1e-6, rtol=0)
    short = [t for t, i in zip(texts, ids) if len(i) <= clf.spec.bptt]
    assert len(short) >= 30
    assert np.allclose(clf.predict_proba(short, bs=8) if clf.blend is None else
                       clf.proba_of_ids(clf.token_ids(short), bs=8),
                       dataloader_outputs(clf, short, _fastai_pad(clf)), atol=1e-6, rtol=0)
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
    alone = np.concatenate([dataloader_outputs(clf, [t], _fastai_pad(clf)) for t in texts])
    wrong = np.abs(dataloader_outputs(clf, texts, _fastai_pad(clf)) - alone).max(1) > 1e-3
    assert 0 < wrong.sum() < len(texts)


def test_ensemble_fast_path_equals_the_mean_of_stock_outputs(models):
    from ulmfit_cli import load_classifier
    both = load_classifier(models["single-label"], models["backward"], device="cpu")
    texts = _texts(models, "single-label")
    stock = np.mean([m.blended(dataloader_outputs(m, texts), texts) for m in both.members], axis=0)
    assert np.allclose(both.predict_proba(texts, bs=5, max_tokens=200), stock, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- ONNX bundles and the torch-free runtime
@pytest.fixture(scope="module")
def bundles(models):
    """An ONNX bundle of each model, and of the forward+backward ensemble's members (a pair is exported as
    a bundle of bundles; two --model flags make the same ensemble)."""
    from ulmfit_cli import api
    out = {}
    for name in ("single-label", "backward", "multi-label", "regression"):
        out[name] = api.export(models[name], models["tmp"] / f"onnx-{name}", fmt="onnx")
    return out


@pytest.mark.parametrize("name", ["single-label", "backward", "multi-label", "regression"])
def test_onnx_bundle_predicts_as_pytorch(models, bundles, name):
    from ulmfit_cli import load_classifier
    from ulmfit_cli.inference.runtime import OnnxClassifier
    texts = _texts(models, name)
    torch_clf = load_classifier(models[name], device="cpu")
    onnx_clf = load_classifier(bundles[name])
    assert isinstance(onnx_clf, OnnxClassifier) and onnx_clf.precision == "fp32"
    texts += pd.read_csv(ROOT / "data" / "trec6" / "test.csv")["text"].tolist()  # real text, unknown words
    assert not isinstance(load_classifier(bundles[name], runtime="torch"), OnnxClassifier)
    expected = torch_clf.predict_proba(texts)
    for bs, max_tokens in ((256, 32_768), (3, 50)):
        assert np.allclose(onnx_clf.predict_proba(texts, bs=bs, max_tokens=max_tokens), expected, atol=1e-4)
    assert onnx_clf.predict(texts[:20]) == torch_clf.predict(texts[:20]) or name == "regression"
    card = json.loads((bundles[name] / "card.json").read_text())
    assert card["task"] == torch_clf.task.name and card["labels"] == torch_clf.labels
    assert card["export"]["format"] == "onnx" and card["export"]["precision"] == "fp32"
    assert set(card["data"]) == {"train", "test"} and len(card["data"]["train"]["sha256"]) == 64
    n_test = len(pd.read_csv(models["single_test" if name in ("single-label", "backward") else "test"]))
    assert card["rows"]["test"] == card["figures"]["test_n"] == n_test and card["upstream"]["run"]
    assert any(k.startswith("baseline_test_") for k in card["figures"])
    assert card["blend_weight"] == 0.5 if name in ("multi-label", "regression") else True


def test_onnx_ensemble_of_a_forward_and_backward_bundle(models, bundles):
    from ulmfit_cli import load_classifier
    texts = _texts(models, "single-label")
    both = load_classifier(bundles["single-label"], bundles["backward"])
    expected = load_classifier(models["single-label"], models["backward"], device="cpu").predict_proba(texts)
    assert np.allclose(both.predict_proba(texts), expected, atol=1e-4)


@pytest.mark.parametrize("name", ["multi-label", "ensemble"])
def test_predict_on_onnx_bundles_runs_without_torch_or_fastai(cli, models, bundles, tmp_path, name):
    """The blended multi-label model (the baseline's part runs on numpy/scikit-learn) and the ensemble, through
    `ulmfit predict` in a process where torch and fastai cannot be imported: the labels PyTorch gives."""
    import subprocess
    paths = [bundles["single-label"], bundles["backward"]] if name == "ensemble" else [bundles[name]]
    data = models["single_test" if name == "ensemble" else "test"]
    out = tmp_path / "p.csv"
    args = [a for p in paths for a in ("--model", p)]
    res = subprocess.run([sys.executable, "-c", NO_TORCH, "predict", *args, "-i", data, "-o", out],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert cli("predict", *args, "-i", data, "-o", tmp_path / "t.csv", "--runtime", "torch").exit_code == 0
    ours, theirs = pd.read_csv(out), pd.read_csv(tmp_path / "t.csv")
    assert ours["prediction"].tolist() == theirs["prediction"].tolist()
    probs = [c for c in theirs.columns if c.startswith("prob_")]
    assert np.allclose(ours[probs].to_numpy(), theirs[probs].to_numpy(), atol=1e-4)
    # and the same process refuses a run dir clearly instead of failing on the missing torch
    res = subprocess.run([sys.executable, "-c", NO_TORCH, "predict", "--model", models["multi-label"],
                          "-i", data, "-o", tmp_path / "x.csv", "--runtime", "onnx"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "has no model.onnx" in res.stderr
    # and asked to explain, it says what is missing
    res = subprocess.run([sys.executable, "-c", NO_TORCH, "predict", *args, "-i", data, "-o", tmp_path / "e.csv",
                          "--explain"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "explanations need PyTorch and Captum" in res.stderr, res.stderr
    assert not (tmp_path / "e.csv").exists()


def test_int8_is_kept_only_when_the_validation_figure_holds(models, tmp_path, monkeypatch):
    from ulmfit_cli import api, load_classifier
    from ulmfit_cli.inference import export
    out = api.export(models["single-label"], tmp_path / "int8", fmt="onnx", quantize="int8")
    card = json.loads((out / "card.json").read_text())
    check = card["export"]["int8"]
    assert check["figure"] == "accuracy" and set(check["valid"]) == {"fp32", "int8"} and "test" in check
    assert check["kept"] == (check["valid"]["int8"] >= check["valid"]["fp32"] - 0.005)
    meta = json.loads((out / "classifier.json").read_text())
    assert meta["onnx"]["precision"] == card["export"]["precision"] == ("int8" if check["kept"] else "fp32")
    texts = _texts(models, "single-label")
    assert np.abs(load_classifier(out).predict_proba(texts)
                  - load_classifier(models["single-label"], device="cpu").predict_proba(texts)).max() < 0.1
    monkeypatch.setattr(export, "INT8_TOLERANCE", -1.0)  # no int8 can be 100 points better: refused
    out = api.export(models["single-label"], tmp_path / "refused", fmt="onnx", quantize="int8")
    card = json.loads((out / "card.json").read_text())
    assert card["export"]["precision"] == "fp32" and card["export"]["int8"]["kept"] is False
    assert not (out / "model.int8.onnx").exists()
    assert load_classifier(out).precision == "fp32"


def test_report_shows_a_bundles_card(cli, bundles):
    res = cli("report", bundles["regression"])
    assert res.exit_code == 0, res.output
    assert "regression" in res.output and "export: onnx fp32" in res.output and "upstream LM" in res.output


def test_bad_export_and_runtime_inputs_are_named(cli, chain, models, bundles, tmp_path):
    res = cli("export", "-m", models["single-label"], "-o", tmp_path / "a", "--quantize", "int8")
    assert res.exit_code == 2 and "--quantize" in res.output and "--format onnx" in res.output
    res = cli("export", "-m", models["single-label"], "-o", tmp_path / "a", "--format", "onnx", "--quantize", "int4")
    assert res.exit_code == 2 and "int4" in res.output
    res = cli("export", "-m", chain["ft"], "-o", tmp_path / "a", "--format", "onnx")
    assert res.exit_code == 2 and "language model" in res.output
    res = cli("export", "-m", bundles["single-label"], "-o", tmp_path / "a", "--format", "onnx", "--quantize", "int8")
    assert res.exit_code == 2 and "train-clf run dir" in res.output and not (tmp_path / "a").exists()
    res = cli("predict", "-m", models["single-label"], "-i", models["single_test"], "-o", tmp_path / "p.csv",
              "--runtime", "onnx")
    assert res.exit_code == 2 and "model.onnx" in res.output
    res = cli("predict", "-m", bundles["single-label"], "-i", models["single_test"], "-o", tmp_path / "p.csv",
              "--runtime", "tensorflow")
    assert res.exit_code == 2 and "--runtime" in res.output
    broken = tmp_path / "broken"
    import shutil
    shutil.copytree(bundles["single-label"], broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    res = cli("predict", "-m", broken, "-i", models["single_test"], "-o", tmp_path / "p.csv")
    assert res.exit_code == 2 and "model.onnx is not a loadable ONNX model" in res.output
    assert not (tmp_path / "p.csv").exists()


def test_threads_come_from_the_flag_else_the_runs_setting(chain, tmp_path):
    """load_classifier(threads=) sets PyTorch's CPU threads; without it, the run's run.threads does."""
    import shutil

    import torch
    import yaml

    from ulmfit_cli import load_classifier
    before = torch.get_num_threads()
    try:
        load_classifier(chain["clf"], device="cpu", threads=1)
        assert torch.get_num_threads() == 1
        run = tmp_path / "clf"
        shutil.copytree(chain["clf"], run)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["run"]["threads"] = 2
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        load_classifier(run, device="cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_numpy_tfidf_equals_scikit_learns_transform():
    """The runtime turns texts into the baseline's features without scikit-learn: `Tfidf` must give
    TfidfVectorizer.transform's values for both analyzers, on real text and on edge cases."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from ulmfit_cli.classify.linear import VECTORIZERS, Tfidf
    from test_corpus import EDGE_CASES, _real_texts
    texts = _real_texts() + EDGE_CASES + ["a", "I", "ab  cd\t\tef", "x y", "  "]
    train, unseen = texts[::2], texts[1::2]
    for settings in VECTORIZERS:
        fitted = TfidfVectorizer(**{**settings, "ngram_range": tuple(settings["ngram_range"])}).fit(train)
        ours = Tfidf.of(fitted, dict(settings))
        for part in (train[:300], unseen):
            expected = fitted.transform(part).toarray()
            got = np.zeros_like(expected)
            for r, text in enumerate(part):
                idx, val = ours.row(text)
                got[r, idx] = val
            assert np.allclose(got, expected, atol=1e-12, rtol=0), settings
