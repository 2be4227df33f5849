"""Hostile input to import-lm, --directions both and tune (issue 24): an empty archive, a damaged
SentencePiece model, two models in one archive, upstreams of the wrong direction, a tune killed between a
trial and its tables, and --resume of a pair without --directions both. Each case: exit 2 (tune: 0), a
message naming the real cause and fix, no traceback, the inputs byte-identical."""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY, write_easy_csv


def _digest(*paths: Path) -> dict:
    """sha256 of each file under `paths` (a file: itself)."""
    files = [q for p in map(Path, paths) for q in ([p] if p.is_file() else sorted(p.rglob("*")))
             if q.is_file()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _refused(res, *needles, absent=("Traceback", "ulmfit-import-")) -> str:
    assert res.exit_code == 2, res.output
    for n in needles:
        assert str(n) in res.output, (n, res.output)
    for n in absent:
        assert n not in res.output, (n, res.output)
    return res.output


@pytest.fixture(scope="module")
def fastai_lm(tmp_path_factory) -> dict:
    """An untrained AWD-LSTM LM's files as fastai itself writes them: the state dict (`lm.pth`) and the
    pickled token list (`itos.pkl`)."""
    from fastai.text.all import AWD_LSTM, TextDataLoaders, awd_lstm_lm_config, language_model_learner
    tmp = tmp_path_factory.mktemp("fastai-lm")
    texts = pd.read_csv(write_easy_csv(tmp / "texts.csv", 60, seed=3))
    dls = TextDataLoaders.from_df(texts, text_col="text", is_lm=True, valid_pct=0.2, bs=8, seq_len=16, seed=0)
    config = {**awd_lstm_lm_config, "emb_sz": 16, "n_hid": 32, "n_layers": 2}
    learn = language_model_learner(dls, AWD_LSTM, config=config, pretrained=False, path=tmp)
    buf = tmp / "files"
    buf.mkdir()
    torch.save(learn.model.state_dict(), buf / "lm.pth")
    (buf / "itos.pkl").write_bytes(pickle.dumps(list(dls.vocab)))
    return {"weights": buf / "lm.pth", "vocab": buf / "itos.pkl"}


def _model_folder(lm: dict, folder: Path, weights: str = "lm.pth", vocab: str = "itos.pkl") -> Path:
    folder.mkdir(parents=True)
    shutil.copyfile(lm["weights"], folder / weights)
    shutil.copyfile(lm["vocab"], folder / vocab)
    return folder


def _tgz(root: Path, archive: Path, wrap: bool = True) -> Path:
    with tarfile.open(archive, "w:gz") as t:
        if wrap:
            t.add(root, arcname=root.name)
        else:
            for p in sorted(root.iterdir()):
                t.add(p, arcname=p.name)
    return archive


# ---------------------------------------------------------------- 1. an empty archive
@pytest.mark.parametrize("kind", ["tgz", "zip"])
def test_an_empty_archive_is_named_as_empty(cli, tmp_path, kind):
    archive = tmp_path / f"empty.{kind}"
    if kind == "zip":
        zipfile.ZipFile(archive, "w").close()
    else:
        tarfile.open(archive, "w:gz").close()
    before = _digest(archive)
    _refused(cli("import-lm", archive, "--output", tmp_path / "imp"), f"{archive} is an empty archive",
             "Fetch it again")
    assert _digest(archive) == before and not (tmp_path / "imp").exists()


# ---------------------------------------------------------------- 2. a damaged SentencePiece model
@pytest.mark.parametrize("packed", [True, False])
def test_a_sentencepiece_model_that_does_not_load_is_refused_at_import(cli, fastai_lm, tmp_path, packed):
    garbage = b"\x00not a protobuf\xff" * 8
    if packed:  # fastai_ulmfit's layout: fwd/, bwd/, spm/spm.model
        root = tmp_path / "de_sp15"
        for d in ("fwd", "bwd"):
            _model_folder(fastai_lm, root / d, "de_sp15_model.pth", "de_sp15_vocab.pkl")
            meta = {"tokenizer": {"class": "SentencePieceTokenizer"}}
            (root / d / "model.json").write_text(json.dumps(meta))
        (root / "spm").mkdir()
        (root / "spm" / "spm.model").write_bytes(garbage)
        source, inside = _tgz(root, tmp_path / "de_sp15.tgz"), "de_sp15/spm/spm.model"
    else:  # a plain folder with a *.model beside the weights
        source = _model_folder(fastai_lm, tmp_path / "plain")
        (source / "tokenizer.model").write_bytes(garbage)
        inside = "tokenizer.model"
    before = _digest(source)
    _refused(cli("import-lm", source, "--output", tmp_path / "imp"),
             f"{source}: {inside} is not a SentencePiece model")
    assert _digest(source) == before and not (tmp_path / "imp").exists()


# ---------------------------------------------------------------- 3. two models in one archive or folder
@pytest.mark.parametrize("packed", [True, False])
def test_two_models_side_by_side_are_listed_relative_to_the_source(cli, fastai_lm, tmp_path, packed):
    root = tmp_path / "two"
    for d in ("a", "b"):
        _model_folder(fastai_lm, root / d)
    source = _tgz(root, tmp_path / "two.tgz", wrap=False) if packed else root
    before = _digest(source)
    out = _refused(cli("import-lm", source, "--output", tmp_path / "imp"),
                   f"{source} holds 2 candidate(s) for the weights file", "a/lm.pth, b/lm.pth",
                   absent=("Traceback", "ulmfit-import-", "holds no"))
    assert _digest(source) == before and not (tmp_path / "imp").exists()


# ---------------------------------------------------------------- 4. --directions both, the wrong upstreams
def _pair_args(chain, fwd: Path, bwd: Path | None, run_dir: Path) -> list:
    args = ["finetune-lm", "-c", TINY, "--set", f"data.train={chain['train']}",
            "--set", f"init.from_run={fwd}", "--set", "train.epochs=1", "--directions", "both",
            "--run-dir", run_dir]
    return args + (["--set", f"init.from_run_backward={bwd}"] if bwd else [])


def _swapped_pair(chain, folder: Path) -> Path:
    """A pair dir whose fwd/ is a backward LM and bwd/ a forward one."""
    folder.mkdir()
    shutil.copytree(chain["lm-bwd"], folder / "fwd")
    shutil.copytree(chain["lm"], folder / "bwd")
    (folder / "directions.json").write_text(json.dumps({"stage": "pretrain", "members": {"forward": "fwd",
                                                                                         "backward": "bwd"}}))
    return folder


@pytest.mark.parametrize("case", ["bwd-is-forward", "fwd-is-backward", "bwd-is-a-classifier", "swapped-pair"])
def test_directions_both_checks_both_upstreams_before_training(cli, chain, tmp_path, case):
    fwd, bwd = {"bwd-is-forward": (chain["lm"], chain["lm"]),
                "fwd-is-backward": (chain["lm-bwd"], chain["lm-bwd"]),
                "bwd-is-a-classifier": (chain["lm"], chain["clf-bwd"]),
                "swapped-pair": (_swapped_pair(chain, tmp_path / "swapped"), None)}[case]
    needles = {"bwd-is-forward": [f"init.from_run_backward: {bwd} was trained forwards; it must be a "
                                  f"backward LM (data.backwards: true)", "wt103-bwd"],
               "fwd-is-backward": [f"init.from_run: {fwd} was trained backwards; it must be a forward LM "
                                   f"(data.backwards: false)", "wt103-fwd"],
               "bwd-is-a-classifier": [f"init.from_run_backward: {bwd} is a train-clf run"],
               "swapped-pair": [f"init.from_run: the pair {fwd} has a fwd/ member trained backwards"]}[case]
    inputs = [p for p in (fwd, bwd) if p]
    before = _digest(*inputs)
    run_dir = tmp_path / "pair"
    out = _refused(cli(*_pair_args(chain, fwd, bwd, run_dir)), *needles,
                   absent=("Traceback", "set data.backwards", "the forward model"))  # nothing trained
    assert "epoch" not in out.lower(), out
    assert _digest(*inputs) == before
    assert not run_dir.exists() and not (tmp_path / ".pair.partial").exists()


# -------------------------------------------------------- 5. tune killed between a trial and its tables
def test_tune_resume_rebuilds_the_tables_and_removes_stale_trials(cli, chain, tmp_path):
    out = tmp_path / "tune"
    sets = [f"data.train={chain['train']}", f"init.from_run={chain['ft']}",
            "train.stages=[{freeze_to: 0, lr: 0.02}]", "search.epochs=[1, 1]", "search.bs=[8, 16]",
            "search.early_epochs=null", "search.prune=false"]
    inputs = (chain["ft"], chain["train"])
    before = _digest(*inputs)
    res = cli("tune", "-c", TINY, *(a for s in sets for a in ("--set", s)), "--trials", 1, "--run-dir", out)
    assert res.exit_code == 0, res.output
    # the state a kill leaves after study.db recorded the trial, before trials.csv/.png were written
    (out / "trials.csv").unlink()
    (out / "trials.png").unlink()
    for stale in ("trials/001", "trials/.001.partial/checkpoints"):
        (out / stale).mkdir(parents=True)
        (out / stale / "last.pt").write_bytes(b"stale")
    (out / "trials" / ".001.lock").write_text("12345")
    res = cli("tune", "--run-dir", out, "--resume")
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert "1 of 1 trial(s) already done" in res.output
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials["trial"]) == [1] and list(trials["state"]) == ["complete"], trials
    assert (out / "trials.png").read_bytes()[:4] == b"\x89PNG" and (out / "best.yaml").is_file()
    assert not (out / "trials").exists()
    assert _digest(*inputs) == before


# -------------------------------------------------------- 6. --resume of a pair, without --directions both
def _pair_dir(chain, folder: Path, finished: bool) -> Path:
    """A classifier pair as --directions both leaves it: finished (fwd/, bwd/) or, in its staging folder,
    interrupted in the backward member (fwd/ only)."""
    folder.mkdir()
    shutil.copytree(chain["clf"], folder / "fwd")
    if finished:
        shutil.copytree(chain["clf-bwd"], folder / "bwd")
    plan = {"stage": "train-clf", "members": {"forward": "fwd", "backward": "bwd"},
            "upstreams": {"fwd": str(chain["ft"]), "bwd": str(chain["ft-bwd"])}}
    (folder / "directions.json").write_text(json.dumps(plan))
    return folder


@pytest.mark.parametrize("finished", [True, False])
def test_resume_of_a_pair_without_directions_both_says_to_pass_it(cli, chain, tmp_path, finished):
    final = tmp_path / "pair"
    folder = _pair_dir(chain, final if finished else tmp_path / ".pair.partial", finished)
    before = _digest(folder)
    _refused(cli("train-clf", "--run-dir", final, "--resume"), f"{final} is a forward+backward pair",
             "--directions both", absent=("Traceback", "no checkpoint to resume"))
    assert _digest(folder) == before
