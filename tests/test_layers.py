"""The pieces every layer shares: the one staging protocol (`files.staged`), configs derived in code
(`config.derive`, `resolve(cfg=...)`), and `api.predict` / `api.evaluate`, which the CLI only calls."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY
from ulmfit_cli.errors import Abandoned, UlmfitError
from ulmfit_cli.files import staged, staging_dir


def _has(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_staged_publishes_whole_and_refuses_a_non_empty_folder_without_force(tmp_path):
    final = tmp_path / "out"
    with staged(final, f"--output {final}") as folder:
        assert folder == staging_dir(final) and not final.exists()  # nothing visible until it is done
        (folder / "a.txt").write_text("first")
    assert _has(final) == {"a.txt"} and not staging_dir(final).exists()
    with pytest.raises(UlmfitError, match="is not empty: pass --force"):
        with staged(final, f"--output {final}"):
            pass
    with pytest.raises(RuntimeError):  # a failed replacement leaves the finished folder as it was
        with staged(final, f"--output {final}", force=True) as folder:
            (folder / "b.txt").write_text("half")
            raise RuntimeError("killed")
    assert _has(final) == {"a.txt"} and not staging_dir(final).exists()
    with staged(final, f"--output {final}", force=True) as folder:
        (folder / "b.txt").write_text("second")
    assert _has(final) == {"b.txt"}
    with pytest.raises(UlmfitError, match="--resume and --force contradict"):
        with staged(final, "x", force=True, resume=True):
            pass


def test_staged_keeps_what_a_resume_can_continue_and_removes_the_rest(tmp_path):
    final = tmp_path / "run"
    resumable = lambda folder: (folder / "ckpt").is_file()  # noqa: E731
    with pytest.raises(UlmfitError):  # bad input before anything to resume: no trace
        with staged(final, "run dir", resumable=resumable):
            raise UlmfitError("bad input")
    assert not staging_dir(final).exists()
    with pytest.raises(KeyboardInterrupt):  # killed after a checkpoint: kept for --resume
        with staged(final, "run dir", resumable=resumable) as folder:
            (folder / "ckpt").write_text("1")
            raise KeyboardInterrupt
    assert (staging_dir(final) / "ckpt").is_file()
    with pytest.raises(UlmfitError, match="unfinished run with checkpoints: pass --resume"):
        with staged(final, "run dir", resumable=resumable):
            pass
    with staged(final, "run dir", resume=True, resumable=resumable) as folder:
        assert (folder / "ckpt").read_text() == "1"  # continued as it was
        (folder / "done").write_text("")
    assert _has(final) == {"ckpt", "done"}
    with pytest.raises(Abandoned):  # a pruned trial is given up whatever it holds
        with staged(tmp_path / "trial", "run dir", resumable=resumable) as folder:
            (folder / "ckpt").write_text("1")
            raise Abandoned("pruned")
    assert not staging_dir(tmp_path / "trial").exists()


def test_staged_in_place_grows_where_it_is(tmp_path):
    out = tmp_path / "tune"
    with staged(out, f"tune dir {out}", in_place=True) as folder:
        assert folder == out
        (folder / "study.db").write_text("1")
    with pytest.raises(UlmfitError, match="--resume continues it, --force starts afresh"):
        with staged(out, f"tune dir {out}", in_place=True):
            pass
    with staged(out, f"tune dir {out}", resume=True, in_place=True) as folder:
        assert (folder / "study.db").is_file()
    with staged(out, f"tune dir {out}", force=True, in_place=True) as folder:
        assert _has(folder) == set()


def test_a_derived_config_is_validated_and_resolved_like_a_file(chain, tmp_path):
    from ulmfit_cli.config import derive
    from ulmfit_cli.recipes import STAGES
    from ulmfit_cli.resolve import config_of, resolve
    stage = STAGES["train-clf"]
    cfg = config_of(stage, [TINY], [f"data.train={chain['train']}", f"init.from_run={chain['ft']}"])
    derived = derive(cfg, {"data.test": None, "train.bs": 8, "run.dir": str(tmp_path / "x")})
    assert (derived.data.test, derived.train.bs, derived.data.train) == (None, 8, str(chain["train"]))
    from_sets = config_of(stage, [TINY], [f"data.train={chain['train']}", f"init.from_run={chain['ft']}",
                                          "data.test=null", "train.bs=8", f"run.dir={tmp_path / 'x'}"])
    assert derived == from_sets
    assert resolve(stage, cfg=derived).cfg == resolve(stage, [TINY], [
        f"data.train={chain['train']}", f"init.from_run={chain['ft']}", "data.test=null", "train.bs=8",
        f"run.dir={tmp_path / 'x'}"]).cfg
    with pytest.raises(UlmfitError, match="model.threshold: for multi-label tasks"):  # the task's rules hold
        derive(cfg, {"model.threshold": 0.3})


def test_api_predict_and_evaluate_are_what_the_cli_runs(cli, chain, tmp_path):
    from ulmfit_cli import api, load_classifier
    texts = pd.read_csv(chain["test"])
    df = api.predict([chain["clf"]], chain["test"], tmp_path / "api.csv")
    assert cli("predict", "--model", chain["clf"], "--input", chain["test"], "--output",
               tmp_path / "cli.csv").exit_code == 0
    assert (tmp_path / "api.csv").read_bytes() == (tmp_path / "cli.csv").read_bytes()
    assert df["prediction"].tolist() == load_classifier(chain["clf"]).predict(texts["text"].tolist())
    report, written = api.evaluate([chain["clf"]], chain["test"], tmp_path / "eval", baseline=False)
    assert [p.name for p in written] == ["report.json", "report.html", "confusion.png"]
    assert report == json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(chain["results"]["train-clf"]["test_accuracy"])
    with pytest.raises(UlmfitError, match="is the --input file"):  # an output never replaces its input
        api.predict([chain["clf"]], chain["test"], Path(chain["test"]))


def test_finetune_lm_reads_fasttext_lines_without_their_labels(cli, chain, tmp_path):
    df = pd.read_csv(chain["train"])
    ft = tmp_path / "train.txt"  # fastText lines: the LM reads the texts; a line without a label is fine here
    ft.write_text("".join(f"__label__{y} {t}\n" for t, y in zip(df["text"], df["label"])) + "no label here\n")
    res = cli("finetune-lm", "-c", TINY, "--set", f"data.train={ft}", "--set", f"init.from_run={chain['lm']}",
              "--set", "train.epochs=1", "--set", "train.frozen_epochs=0", "--run-dir", tmp_path / "ft")
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert results["train_docs"] + results["valid_docs"] == len(df) + 1


def test_a_search_goes_to_its_own_dir_not_the_classifiers(chain):
    from ulmfit_cli.recipes import STAGES
    from ulmfit_cli.resolve import config_of, search_dir_of
    cfg = config_of(STAGES["train-clf"], [TINY], [f"data.train={chain['train']}", "run.dir=runs/final",
                                                  "run.name=x"])
    assert search_dir_of(cfg) == Path("runs/x-tune")  # best.yaml keeps run.dir for the final classifier
    assert search_dir_of(cfg, Path("elsewhere")) == Path("elsewhere")
