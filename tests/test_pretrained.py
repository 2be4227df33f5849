"""Published AWD-LSTM models in and out: `ulmfit import-lm` on fastai-format files that fastai itself
writes here (no network), logits equal to fastai's `load_pretrained` after fine-tuning onto a new vocab,
malicious pickles and archive paths refused, and `ulmfit export` of an LM (a bundle, or fastai's files)."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY, write_easy_csv

SIZES = {"emb_sz": 16, "n_hid": 32, "n_layers": 2}


def _fastai_config() -> dict:
    from fastai.text.all import awd_lstm_lm_config
    return {**awd_lstm_lm_config, **SIZES}


def _v1_names(state: dict) -> dict:
    """fastai v1's key layout, as in the WT103 download: each LSTM also keeps `module.weight_hh_l0`."""
    out = {}
    for k, v in state.items():
        out[k] = v
        if k.endswith(".module.weight_ih_l0"):
            out[k.replace("weight_ih", "weight_hh")] = state[k.replace("module.weight_ih_l0", "weight_hh_l0_raw")]
    return out


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A pretrained LM written by fastai itself as the WT103 download lays it out: a folder with
    `lstm_fwd.pth` (v1 key names) and `itos_wt103.pkl` (the pickled token list); also the same model as
    `learn.save(with_opt=True)` writes it, and a second vocabulary's texts to fine-tune on."""
    from fastai.text.all import AWD_LSTM, TextDataLoaders, language_model_learner
    tmp = tmp_path_factory.mktemp("published")
    texts = pd.read_csv(write_easy_csv(tmp / "pre.csv", 120, seed=5))
    dls = TextDataLoaders.from_df(texts, text_col="text", is_lm=True, valid_pct=0.2, bs=8, seq_len=16, seed=0)
    learn = language_model_learner(dls, AWD_LSTM, config=_fastai_config(), pretrained=False, path=tmp,
                                   model_dir="with_opt")
    learn.fit(1, 1e-2)
    learn.save("lm", with_opt=True)  # tmp/with_opt/lm.pth: {'model': ..., 'opt': ...}
    wt103 = tmp / "wt103-fwd"
    wt103.mkdir()
    torch.save(_v1_names(learn.model.state_dict()), wt103 / "lstm_fwd.pth")
    with open(wt103 / "itos_wt103.pkl", "wb") as f:
        pickle.dump(list(dls.vocab), f)
    shutil.copyfile(wt103 / "itos_wt103.pkl", tmp / "with_opt" / "itos.pkl")
    target = write_easy_csv(tmp / "target.csv", 120, seed=9)  # another corpus: another vocab to remap onto
    return {"tmp": tmp, "wt103": wt103, "with_opt": tmp / "with_opt", "target": target, "vocab": list(dls.vocab)}


def _fastai_lm(vocab: list[str], folder: Path, fnames: list[str]):
    """fastai's own route: `language_model_learner(dls, AWD_LSTM, pretrained=True, pretrained_fnames=...)`."""
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.text.all import AWD_LSTM, language_model_learner
    dls = DataLoaders(DataLoader([]), DataLoader([]))
    dls.vocab = vocab
    return language_model_learner(dls, AWD_LSTM, config=_fastai_config(), pretrained=True,
                                  pretrained_fnames=fnames, path=folder, model_dir=".").model


def _logits(model, vocab_size: int) -> torch.Tensor:
    x = torch.randint(0, vocab_size, (3, 24), generator=torch.Generator().manual_seed(0))
    model.eval()
    model.reset()
    with torch.no_grad():
        return model(x)[0]


def _ours(run: Path):
    from ulmfit_cli.files import load_weights
    from ulmfit_cli.runs import read_vocab
    from ulmfit_cli.train.learners import lm_model
    vocab = read_vocab(run, "test")
    return lm_model(vocab, SIZES, load_weights(run / "lm.pth")), vocab


@pytest.mark.parametrize("backwards", [False, True])
def test_import_then_finetune_gives_fastais_logits(cli, published, tmp_path, backwards):
    way = "true" if backwards else "false"
    flag = "--backwards" if backwards else "--forwards"
    res = cli("import-lm", published["wt103"], "--output", tmp_path / "imp", flag)
    assert res.exit_code == 0, res.output
    cfg = (tmp_path / "imp" / "config.yaml").read_text()
    assert "emb_sz: 16" in cfg and "n_hid: 32" in cfg and "n_layers: 2" in cfg and f"backwards: {way}" in cfg
    assert json.loads((tmp_path / "imp" / "vocab.json").read_text()) == published["vocab"]
    # fine-tune onto the target corpus' vocab without training: the weights are the remapped pretrained ones
    res = cli("finetune-lm", "-c", TINY, "--set", f"data.train={published['target']}",
              "--set", f"init.from_run={tmp_path / 'imp'}", "--set", "train.epochs=0", "--set", "train.frozen_epochs=0",
              "--set", f"data.backwards={way}", "--run-dir", tmp_path / "ft")
    assert res.exit_code == 0, res.output
    ours, vocab = _ours(tmp_path / "ft")
    assert vocab != published["vocab"]  # a real remap
    theirs = _fastai_lm(vocab, published["wt103"], ["lstm_fwd", "itos_wt103"])
    assert torch.allclose(_logits(ours, len(vocab)), _logits(theirs, len(vocab)), atol=1e-6)


def test_learn_save_with_optimizer_imports_the_same_model(cli, published, tmp_path):
    assert cli("import-lm", published["with_opt"], "--output", tmp_path / "a").exit_code == 0
    assert cli("import-lm", published["wt103"], "--output", tmp_path / "b").exit_code == 0
    (a, vocab), (b, _) = _ours(tmp_path / "a"), _ours(tmp_path / "b")
    assert torch.equal(_logits(a, len(vocab)), _logits(b, len(vocab)))


def test_import_finetune_classify_predict_end_to_end_both_directions(cli, published, tmp_path):
    csv = published["target"]
    for way in ("false", "true"):
        imp, ft, clf = (tmp_path / f"{n}-{way}" for n in ("imp", "ft", "clf"))
        flag = "--backwards" if way == "true" else "--forwards"
        assert cli("import-lm", published["wt103"], "--output", imp, flag).exit_code == 0
        res = cli("finetune-lm", "-c", TINY, "--set", f"data.train={csv}", "--set", f"init.from_run={imp}",
                  "--set", f"data.backwards={way}", "--run-dir", ft)
        assert res.exit_code == 0, res.output
        res = cli("train-clf", "-c", TINY, "--set", f"data.train={csv}", "--set", f"init.from_run={ft}",
                  "--set", f"data.backwards={way}", "--set", "train.stages=[{freeze_to: 0, epochs: 1}]",
                  "--run-dir", clf)
        assert res.exit_code == 0, res.output
        res = cli("predict", "--model", clf, "--input", csv, "--output", tmp_path / f"p-{way}.csv")
        assert res.exit_code == 0, res.output
        assert len(pd.read_csv(tmp_path / f"p-{way}.csv")) == len(pd.read_csv(csv))
    res = cli("finetune-lm", "-c", TINY, "--set", f"data.train={csv}", "--set", f"init.from_run={tmp_path / 'imp-true'}",
              "--run-dir", tmp_path / "wrong-way")
    assert res.exit_code == 2 and "backwards" in res.output


def test_a_fastai_ulmfit_archive_with_sentencepiece(cli, chain, tmp_path):
    """fastai_ulmfit's layout (fwd/, bwd/, spm/spm.model) as a .tgz, made from a SentencePiece LM exported
    in fastai's format; imported in either direction, then through the chain to predict."""
    lm = tmp_path / "sp-lm"
    res = cli("pretrain", "-c", TINY, "--set", f"data.source={chain['dump']}", "--set", "data.tokenizer=sentencepiece",
              "--set", "data.sp_vocab_size=120", "--run-dir", lm)
    assert res.exit_code == 0, res.output
    assert cli("export", "--model", lm, "--format", "fastai", "--output", tmp_path / "fa").exit_code == 0
    root = tmp_path / "de_sp15"
    for d in ("fwd", "bwd"):
        (root / d).mkdir(parents=True)
        shutil.copyfile(tmp_path / "fa" / "lm.pth", root / d / "de_sp15_model.pth")
        shutil.copyfile(tmp_path / "fa" / "lm_vocab.pkl", root / d / "de_sp15_vocab.pkl")
        (root / d / "model.json").write_text(json.dumps({"tokenizer": {"class": "SentencePieceTokenizer",
                                                                       "params": {"lang": "de"}}}))
    (root / "spm").mkdir()
    shutil.copyfile(tmp_path / "fa" / "spm.model", root / "spm" / "spm.model")
    archive = tmp_path / "de_sp15.tgz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(root, arcname="de_sp15")
    for flag in ("--forwards", "--backwards"):
        out = tmp_path / f"imp{flag}"
        res = cli("import-lm", archive, "--output", out, flag)
        assert res.exit_code == 0, res.output
        assert (out / "tokenizer.model").read_bytes() == (lm / "tokenizer.model").read_bytes()
        assert f"backwards: {'true' if flag == '--backwards' else 'false'}" in (out / "config.yaml").read_text()
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set",
              f"init.from_run={tmp_path / 'imp--forwards'}", "--set", "train.stages=[{freeze_to: 0, epochs: 1}]",
              "--run-dir", tmp_path / "clf")
    assert res.exit_code == 0, res.output
    res = cli("predict", "--model", tmp_path / "clf", "--input", chain["test"], "--output", tmp_path / "p.csv")
    assert res.exit_code == 0, res.output


# ---------------------------------------------------------------- safety
class _Sentinel:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _poisoned(published, tmp_path, which: str) -> tuple[Path, Path]:
    folder, sentinel = tmp_path / "poisoned", tmp_path / "code-ran"
    shutil.copytree(published["wt103"], folder)
    if which == "vocab":
        (folder / "itos_wt103.pkl").write_bytes(pickle.dumps(["xxunk", _Sentinel(sentinel)]))
    else:
        torch.save({"0.encoder.weight": _Sentinel(sentinel)}, folder / "lstm_fwd.pth")
    return folder, sentinel


def _tgz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as t:
        t.add(folder, arcname=folder.name)
    return archive


@pytest.mark.parametrize("which", ["vocab", "weights"])
@pytest.mark.parametrize("packed", [False, True])
def test_a_pickle_that_would_run_code_is_refused(cli, published, tmp_path, which, packed):
    folder, sentinel = _poisoned(published, tmp_path, which)
    source = _tgz(folder, tmp_path / "poisoned.tgz") if packed else folder
    res = cli("import-lm", source, "--output", tmp_path / "imp")
    assert res.exit_code == 2 and "refused" in res.output and "Traceback" not in res.output, res.output
    assert not sentinel.exists() and not (tmp_path / "imp").exists()


def test_a_vocabulary_that_is_not_a_token_list_is_refused(cli, published, tmp_path):
    folder = tmp_path / "odd"
    shutil.copytree(published["wt103"], folder)
    (folder / "itos_wt103.pkl").write_bytes(pickle.dumps({"the": 1}))
    res = cli("import-lm", folder, "--output", tmp_path / "imp")
    assert res.exit_code == 2 and "not a list of token strings" in res.output


def _tar_with(archive: Path, name: str, data: bytes = b"x", link: str | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as t:
        member = tarfile.TarInfo(name)
        if link:
            member.type, member.linkname = tarfile.SYMTYPE, link
            t.addfile(member)
        else:
            member.size = len(data)
            t.addfile(member, io.BytesIO(data))
    return archive


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "zip-dotdot"])
def test_archive_members_outside_the_archive_are_refused(cli, tmp_path, kind):
    escaped = tmp_path / "escaped.txt"
    if kind == "dotdot":
        archive = _tar_with(tmp_path / "a.tgz", "model/../../escaped.txt")
    elif kind == "absolute":
        archive = _tar_with(tmp_path / "a.tar.gz", str(escaped))
    elif kind == "symlink":
        archive = _tar_with(tmp_path / "a.tgz", "model/link.pth", link=str(escaped))
    else:
        archive = tmp_path / "a.zip"
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("../escaped.txt", "x")
    res = cli("import-lm", archive, "--output", tmp_path / "imp")
    assert res.exit_code == 2 and "refused" in res.output and "Traceback" not in res.output, res.output
    assert not escaped.exists() and not (tmp_path / "imp").exists()


def test_wt103_offline_names_the_url_and_the_folder(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTAI_HOME", str(tmp_path / "fastai-home"))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a closed port: fails at once, as offline
    res = cli("import-lm", "wt103-bwd", "--output", tmp_path / "imp")
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert "https://s3.amazonaws.com/fast-ai-modelzoo/wt103-bwd.tgz" in out and "wt103-bwd" in out
    assert not (tmp_path / "imp").exists()


# ---------------------------------------------------------------- out
def test_export_fastai_format_loads_in_fastai_with_the_same_logits(cli, chain, tmp_path):
    out = tmp_path / "fa"
    res = cli("export", "--model", chain["ft"], "--format", "fastai", "--output", out)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["config"] == SIZES and meta["pretrained_fnames"] == ["lm", "lm_vocab"]
    ours, vocab = _ours(chain["ft"])
    theirs = _fastai_lm(vocab, out, meta["pretrained_fnames"])  # fastai's match_embeds: the identity here
    assert torch.allclose(_logits(ours, len(vocab)), _logits(theirs, len(vocab)), atol=1e-6)


def test_an_lm_bundle_is_taken_by_init_from_run_and_generate(cli, chain, tmp_path):
    bundle = tmp_path / "lm-bundle"
    assert cli("export", "--model", chain["ft"], "--output", bundle).exit_code == 0
    assert not (bundle / "checkpoints").exists() and not (bundle / "metrics.jsonl").exists()
    assert not list(bundle.glob("*.pkl"))
    res = cli("generate", "--run-dir", bundle, "--prompt", "the history", "--n-words", 5, "--seed", 0)
    same = cli("generate", "--run-dir", chain["ft"], "--prompt", "the history", "--n-words", 5, "--seed", 0)
    assert res.exit_code == 0 and res.output == same.output
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={bundle}",
              "--print-config")
    assert res.exit_code == 0 and "n_hid: 32" in res.output, res.output
    res = cli("export", "--model", chain["clf"], "--format", "fastai", "--output", tmp_path / "x")
    assert res.exit_code == 2 and "not a language-model run" in res.output


# ---------------------------------------------------------------- data.lang
def test_data_lang_travels_from_pretrain_to_predict(cli, chain, tmp_path):
    lm, clf = tmp_path / "lm-de", tmp_path / "clf-de"
    res = cli("pretrain", "-c", TINY, "--set", f"data.source={chain['dump']}", "--set", "data.lang=de",
              "--run-dir", lm)
    assert res.exit_code == 0, res.output
    assert "lang: de" in (lm / "config.yaml").read_text()
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={lm}",
              "--set", "train.stages=[{freeze_to: 0, epochs: 1}]", "--run-dir", clf)
    assert res.exit_code == 0, res.output
    assert "lang: de" in (clf / "config.yaml").read_text()
    from ulmfit_cli import load_classifier
    assert load_classifier(clf, device="cpu").spec.lang == "de"
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={lm}",
              "--set", "data.lang=fr", "--print-config")
    assert res.exit_code == 2 and "data.lang" in res.output and "'de'" in res.output
    res = cli("pretrain", "-c", TINY, "--set", f"data.source={chain['dump']}", "--set", "data.lang=zz",
              "--run-dir", tmp_path / "bad")
    assert res.exit_code == 2 and "data.lang" in res.output and "'zz'" in res.output
