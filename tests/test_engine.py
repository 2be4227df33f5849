"""Engine pieces on their own: publishing a staged folder, the resume fingerprint, every training loader's
state round trip, and the config a run records (resolved once)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from conftest import TINY
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import publish, staging_dir

CPU = torch.device("cpu")


# ---------------------------------------------------------------- publish
def _folder(path, text: str):
    path.mkdir(parents=True)
    (path / "f.txt").write_text(text)
    return path


def test_publish_moves_a_staged_folder_into_place_and_replaces_an_old_one(tmp_path):
    final = tmp_path / "run"
    publish(_folder(staging_dir(final), "one"), final)
    assert (final / "f.txt").read_text() == "one" and not staging_dir(final).exists()
    publish(_folder(staging_dir(final), "two"), final)
    assert (final / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # neither staging nor the old copy is left
    target = tmp_path / "file"
    target.write_text("a file in the way")
    publish(_folder(tmp_path / "new", "three"), target)
    assert (target / "f.txt").read_text() == "three"


def test_a_token_store_rebuilt_with_force_is_published_the_same_way(tmp_path):
    from conftest import write_dump
    from ulmfit_cli.config import PretrainData
    from ulmfit_cli.corpus.prepare import prepare
    data = PretrainData(source=str(write_dump(tmp_path / "w-pages-articles.xml", n_articles=4)),
                        cache_dir=str(tmp_path / "cache"), workers=0, min_freq=1)
    first = prepare(data, seed=0)
    again = prepare(data, seed=0, force=True)
    assert again.path == first.path and again.vocab == first.vocab
    assert sorted(p.name for p in first.path.parent.iterdir()) == [first.path.name]


# ---------------------------------------------------------------- fingerprint
def test_the_fingerprint_holds_what_fixes_the_model_and_data_but_not_what_may_change(tmp_path):
    from ulmfit_cli.config import load_config
    from ulmfit_cli.recipes import STAGES
    from ulmfit_cli.train.fingerprint import DATA_KEY, check_fingerprint, data_signature, fingerprint
    cfg = load_config(STAGES["pretrain"].config, [TINY], ["data.source=x.xml"], "pretrain config")
    sig = data_signature(["a", "b"], np.arange(10))
    fp = fingerprint(cfg, sig)
    assert fp["model.n_hid"] == 32 and fp["train.bs"] == 8 and fp[DATA_KEY] == sig
    assert "train.epochs" not in fp and "run.device" not in fp and "train.lr" not in fp
    assert data_signature(["a", "b"], np.arange(11)) != sig and data_signature(["a", "c"], np.arange(10)) != sig
    more_epochs = load_config(STAGES["pretrain"].config, [TINY], ["data.source=x.xml", "train.epochs=9"], "p")
    check_fingerprint(fp, fingerprint(more_epochs, sig), tmp_path / "last.pt")  # allowed
    wider = load_config(STAGES["pretrain"].config, [TINY], ["data.source=x.xml", "model.n_hid=48"], "p")
    with pytest.raises(UlmfitError, match="model.n_hid: checkpoint 32, now 48"):
        check_fingerprint(fp, fingerprint(wider, sig), tmp_path / "last.pt")


# ---------------------------------------------------------------- loader states
def _batches(dl) -> list:
    return [tuple(t.clone() for t in b[:2]) for b in dl]


def _stream():
    from ulmfit_cli.train.loaders import StreamLMLoader
    tokens, offsets = np.arange(1, 2001), np.array([0, 300, 1100, 1500, 2000])
    return StreamLMLoader(tokens, 4, 16, CPU, offsets, shuffle=True, seed=1, random_bptt=True)


def _fastai_lm():
    from ulmfit_cli.train.loaders import fastai_lm_dls
    tokens, offsets = np.arange(1, 2001), np.array([0, 300, 1100, 1500, 2000])
    return fastai_lm_dls((tokens, offsets), (tokens[:200], np.array([0, 200])), ["xxunk", "xxpad"], 4, 16,
                         CPU).train


def _classifier():
    from ulmfit_cli.train.loaders import clf_dl
    rng = np.random.default_rng(0)
    docs = [rng.integers(2, 50, rng.integers(3, 30)) for _ in range(40)]
    return clf_dl(docs, rng.integers(0, 2, 40), ["xxunk", "xxpad"] + [f"w{i}" for i in range(48)], 8, 16, CPU,
                  shuffle=True)


def _sharded():
    from ulmfit_cli.train.distributed import ShardedDL
    return ShardedDL(_classifier(), seed=3)


@pytest.mark.parametrize("make", [_stream, _fastai_lm, _classifier, _sharded],
                         ids=["stream", "fastai LMDataLoader", "classifier SortedDL", "sharded"])
def test_every_training_loader_replays_an_epoch_from_its_state(make):
    from ulmfit_cli.train.rng import GlobalRNG
    dl = make()
    _batches(dl)  # one epoch in: the state is not the initial one
    rng, state = GlobalRNG.state_dict(), dl.state_dict()
    first = _batches(dl)
    following = _batches(dl)
    GlobalRNG.load_state_dict(rng)
    dl.load_state_dict(state)
    replay = _batches(dl)
    assert len(replay) == len(first) and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                             for a, b in zip(first, replay))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, following)) or len(first) != len(following)


# ---------------------------------------------------------------- resolved once
def test_config_yaml_records_what_ran_and_asks_again_when_read_back(tmp_path, easy_csv):
    from ulmfit_cli import api
    from ulmfit_cli.config import load_config
    from ulmfit_cli.recipes import STAGES
    api.train("train-clf", [TINY], [f"data.train={easy_csv}", "train.stages=[{freeze_to: 0}]"],
              run_dir=tmp_path / "clf")
    recorded = yaml.safe_load((tmp_path / "clf" / "config.yaml").read_text())
    assert recorded["run"]["device"] == "cpu" and recorded["run"]["precision"] == "fp32"
    assert recorded["run"]["dir"] == str(tmp_path / "clf") and recorded["model"]["emb_sz"] == 16
    assert recorded["_meta"]["requested"] == {"run.device": "auto", "run.precision": "auto"}
    again = load_config(STAGES["train-clf"].config, [tmp_path / "clf" / "config.yaml"], [], "c")
    assert (again.run.device, again.run.precision) == ("auto", "auto")
    with pytest.raises(Exception):  # frozen: nothing changes the config after resolving
        again.run.precision = "fp16"


def test_a_bundle_with_bad_settings_is_refused_naming_the_key(cli, chain, tmp_path):
    import json
    bundle = tmp_path / "bundle"
    assert cli("export", "--model", chain["clf"], "--output", bundle).exit_code == 0
    meta = json.loads((bundle / "classifier.json").read_text())
    meta["spec"]["max_len"] = -5
    (bundle / "classifier.json").write_text(json.dumps(meta))
    res = cli("predict", "--model", bundle, "--input", chain["test"], "--output", tmp_path / "p.csv")
    assert res.exit_code == 2 and "max_len" in res.output and "classifier.json" in res.output, res.output
