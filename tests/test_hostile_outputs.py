"""No output may be, contain or sit inside an input of the same command, not even with --force (issue 24): the
seven cases that lost data, then every command that writes, each left with its inputs byte for byte."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from conftest import TINY

RULE = "a command never writes over its inputs"


def _digest(*paths: Path) -> str:
    """Every file below `paths` (names and bytes): equal before and after means nothing was touched."""
    h = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            h.update(str(f).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _refused(res, *named):
    assert res.exit_code == 2, res.output
    assert RULE in res.output and "Traceback" not in res.output, res.output
    for name in named:
        assert str(name) in res.output, res.output


@pytest.fixture
def fastai_lm(cli, chain, tmp_path):
    """A fastai-format LM folder (lm.pth, lm_vocab.pkl, model.json), as fastai's pretrained_fnames reads it."""
    out = tmp_path / "fai" / "fwd"
    out.parent.mkdir()
    assert cli("export", "--model", chain["lm"], "--output", out, "--format", "fastai").exit_code == 0
    return out


def test_import_lm_over_its_source_or_the_sources_parent(cli, fastai_lm):
    before = _digest(fastai_lm.parent)
    _refused(cli("import-lm", fastai_lm, "-o", fastai_lm, "--force"), fastai_lm)  # 1: output = source
    sub = fastai_lm.parent / "par" / "sub"
    shutil.copytree(fastai_lm, sub)
    before = _digest(fastai_lm.parent)
    _refused(cli("import-lm", sub, "-o", sub.parent, "--force"), sub)  # 2: output = the source's parent
    assert _digest(fastai_lm.parent) == before


def test_a_run_dir_holding_the_upstream_run_and_the_data(cli, chain, tmp_path):
    x = tmp_path / "x"  # 3: the run dir holds the upstream run, the training CSV and an unrelated file
    shutil.copytree(chain["ft"], x / "ft")
    shutil.copy(chain["train"], x / "train.csv")
    (x / "notes.txt").write_text("mine")
    before = _digest(x)
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={x / 'train.csv'}", "--set", f"init.from_run={x / 'ft'}",
              "--run-dir", x, "--force")
    _refused(res, x)
    assert _digest(x) == before


def test_tune_over_its_upstream_run(cli, chain, tmp_path):
    ftcopy = tmp_path / "ftcopy"  # 4: the tune dir is init.from_run
    shutil.copytree(chain["ft"], ftcopy)
    before = _digest(ftcopy)
    res = cli("tune", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={ftcopy}",
              "--trials", "1", "--run-dir", ftcopy, "--force")
    _refused(res, ftcopy)
    assert _digest(ftcopy) == before


def test_export_over_the_model(cli, chain, tmp_path):
    clfx = tmp_path / "clfx"  # 5: the bundle would replace the run it is made from
    shutil.copytree(chain["clf"], clfx)
    before = _digest(clfx)
    _refused(cli("export", "--model", clfx, "--output", clfx, "--force"), clfx)
    assert _digest(clfx) == before


def test_lr_find_plot_over_the_training_data_or_the_upstream_weights(cli, chain, tmp_path):
    data, ft = tmp_path / "train.csv", tmp_path / "ft"
    shutil.copy(chain["train"], data)
    shutil.copytree(chain["ft"], ft)
    before = _digest(data, ft)
    sets = ["--set", f"data.train={data}", "--set", f"init.from_run={ft}"]
    _refused(cli("lr-find", "train-clf", "-c", TINY, *sets, "-o", data), data)  # 6: the PNG over data.train
    _refused(cli("lr-find", "train-clf", "-c", TINY, *sets, "-o", ft / "lm.pth"), ft)  # 7: inside init.from_run
    assert _digest(data, ft) == before


def test_through_a_symlink(cli, chain, tmp_path):
    clfx = tmp_path / "clfx"
    shutil.copytree(chain["clf"], clfx)
    link = tmp_path / "link"
    link.symlink_to(clfx)
    before = _digest(clfx)
    _refused(cli("export", "--model", clfx, "--output", link, "--force"))
    assert _digest(clfx) == before


def _writers(chain, tmp_path: Path):
    """(command args, the inputs that must stay as they were) for every command that writes."""
    dump_dir, cfg_dir, data_dir = tmp_path / "dump", tmp_path / "cfg", tmp_path / "data"
    for d in (dump_dir, cfg_dir, data_dir):
        d.mkdir()
    shutil.copy(chain["dump"], dump_dir / "wiki.xml.bz2")
    shutil.copy(TINY, cfg_dir / "tiny.yaml")
    shutil.copy(chain["train"], data_dir / "train.csv")
    clf = tmp_path / "clf"
    shutil.copytree(chain["clf"], clf)
    train = data_dir / "train.csv"
    return {
        "pretrain": (["pretrain", "-c", TINY, "--set", f"data.source={dump_dir / 'wiki.xml.bz2'}",
                      "--run-dir", dump_dir, "--force"], [dump_dir]),
        "finetune-lm": (["finetune-lm", "-c", cfg_dir / "tiny.yaml", "--set", f"data.train={chain['train']}",
                         "--set", f"init.from_run={chain['lm']}", "--run-dir", cfg_dir, "--force"], [cfg_dir]),
        "train-clf": (["train-clf", "-c", TINY, "--set", f"data.train={train}", "--set",
                       f"init.from_run={chain['ft']}", "--run-dir", data_dir, "--force"], [data_dir]),
        "predict": (["predict", "--model", clf, "--input", train, "--output", train], [train, clf]),
        "evaluate": (["evaluate", "--model", clf, "--input", train, "--output", clf / "eval"], [clf]),
        "export": (["export", "--model", clf, "--output", clf / "bundle", "--force"], [clf]),
        "lr-find": (["lr-find", "train-clf", "-c", cfg_dir / "tiny.yaml", "--set", f"data.train={train}",
                     "--set", f"init.from_run={chain['ft']}", "-o", cfg_dir / "tiny.yaml"], [cfg_dir, train]),
        "tune": (["tune", "-c", TINY, "--set", f"data.train={train}", "--set", f"init.from_run={chain['ft']}",
                  "--trials", "1", "--run-dir", data_dir, "--force"], [data_dir]),
    }


@pytest.mark.parametrize("command", ["pretrain", "finetune-lm", "train-clf", "predict", "evaluate", "export",
                                     "lr-find", "tune"])
def test_no_command_writes_over_what_it_reads(cli, chain, tmp_path, command):
    args, inputs = _writers(chain, tmp_path)[command]
    before = _digest(*inputs)
    _refused(cli(*args))
    assert _digest(*inputs) == before


# ---------------------------------------------------------------- damaged files, odd names and numbers
def test_random_bytes_as_weights_are_called_damaged_never_weights_only_false(cli, chain, fastai_lm, tmp_path):
    (fastai_lm / "lm.pth").write_bytes(b"hello world" * 100)
    for res in (cli("import-lm", fastai_lm, "-o", tmp_path / "imp"),
                _run_with_garbage_model(cli, chain, tmp_path)):
        assert res.exit_code == 2 and "damaged" in res.output, res.output
        assert "weights_only" not in res.output and "Traceback" not in res.output, res.output


def _run_with_garbage_model(cli, chain, tmp_path):
    clf = tmp_path / "clf"
    shutil.copytree(chain["clf"], clf)
    (clf / "model.pth").write_bytes(b"hello world" * 100)
    return cli("predict", "--model", clf, "--input", chain["test"], "--output", tmp_path / "p.csv")


def test_a_vocabulary_with_a_token_twice_is_refused(cli, fastai_lm, tmp_path):
    import pickle
    (fastai_lm / "lm_vocab.pkl").write_bytes(pickle.dumps(["the"] * 136))
    res = cli("import-lm", fastai_lm, "-o", tmp_path / "imp")
    assert res.exit_code == 2 and "more than once" in res.output and "'the'" in res.output, res.output
    assert not (tmp_path / "imp").exists()


def test_predict_refuses_a_suffix_it_does_not_write(cli, chain, tmp_path):
    res = cli("predict", "--model", chain["clf"], "--input", chain["test"], "--output", tmp_path / "p.parquet")
    assert res.exit_code == 2 and ".parquet" in res.output and ".csv" in res.output, res.output
    assert not (tmp_path / "p.parquet").exists()


def test_a_regression_label_too_large_for_float32_is_named_before_training(cli, chain, tmp_path):
    import pandas as pd
    df = pd.read_csv(chain["train"]).assign(score=1.0)
    df.loc[3, "score"] = 1e308  # finite in float64, inf in the float32 that trains
    df.to_csv(tmp_path / "reg.csv", index=False)
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={tmp_path / 'reg.csv'}", "--set",
              f"init.from_run={chain['ft']}", "--set", "data.task=regression", "--set", "data.label_col=score",
              "--run-dir", tmp_path / "r")
    assert res.exit_code == 2 and "row 4" in res.output and "float32" in res.output, res.output
    assert "checkpoint" not in res.output and not (tmp_path / ".r.partial").exists()


def test_a_nan_before_any_checkpoint_points_at_no_checkpoint(chain, tmp_path):
    from faults import NanAtStep

    from ulmfit_cli import api
    from ulmfit_cli.errors import TrainingFailed
    with pytest.raises(TrainingFailed) as e:
        api.train("train-clf", [TINY], [f"data.train={chain['train']}", f"init.from_run={chain['ft']}"],
                  run_dir=tmp_path / "nan", callbacks=[NanAtStep(1)])
    assert "no checkpoint was written" in str(e.value) and "--resume" not in str(e.value), str(e.value)


def test_an_infinite_rate_is_refused_as_nan_is(cli, chain):
    for value in (".inf", "-.inf", ".nan"):
        res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"train.lr={value}",
                  "--print-config")
        assert res.exit_code == 2 and "train.lr" in res.output and "Traceback" not in res.output, res.output


def test_any_random_bytes_as_weights_are_damaged(tmp_path):
    from ulmfit_cli.errors import UlmfitError
    from ulmfit_cli.files import load_weights
    for i, data in enumerate((bytes(range(256)) * 4, b"\x80\x02" + bytes(range(200)), b"hello world" * 100)):
        (tmp_path / f"{i}.pth").write_bytes(data)
        with pytest.raises(UlmfitError, match="damaged") as e:
            load_weights(tmp_path / f"{i}.pth")
        assert "weights_only" not in str(e.value)


def test_evaluate_writes_into_a_folder_that_holds_its_model(cli, chain, tmp_path):
    clf = tmp_path / "runs" / "clf"
    shutil.copytree(chain["clf"], clf)
    before = _digest(clf)
    res = cli("evaluate", "--model", clf, "--input", chain["test"], "--output", tmp_path / "runs", "--no-baseline")
    assert res.exit_code == 0, res.output  # only written into: report.json beside the model, which stays
    assert (tmp_path / "runs" / "report.json").is_file() and _digest(clf) == before


def test_trials_csv_leaves_out_a_trial_killed_while_drawing_its_values(tmp_path):
    import optuna
    import pandas as pd

    from ulmfit_cli.recipes.tune import _write_tables
    dists = {"lr_scale": optuna.distributions.FloatDistribution(0.25, 4, log=True),
             "bs": optuna.distributions.CategoricalDistribution([8, 16])}
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"lr_scale": 1.0, "bs": 8}, distributions=dists, value=0.5))
    study.add_trial(optuna.trial.create_trial(params={"lr_scale": 2.0}, distributions={"lr_scale": dists["lr_scale"]},
                                              state=optuna.trial.TrialState.FAIL))  # killed before it drew bs
    _write_tables(study, tmp_path, "accuracy")
    rows = pd.read_csv(tmp_path / "trials.csv")
    assert rows["trial"].tolist() == [1] and rows["bs"].isin([8, 16]).all()
