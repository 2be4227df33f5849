"""The whole pipeline, pretrain -> finetune-lm -> train-clf -> generate, on the session's tiny chain."""
import json

import pytest
import torch
import yaml

from conftest import TINY


@pytest.fixture
def pipeline(chain, cli):
    """The session's trained chain (conftest.chain) and a CLI runner."""
    return {**chain, "run": cli}


def test_every_stage_returns_its_results(pipeline):
    for stage in ("pretrain", "finetune-lm", "train-clf"):
        results = pipeline["results"][stage]
        assert results and ("valid_loss" in results or "valid_accuracy" in results), (stage, results)


def test_lm_run_dirs_hold_the_artifacts(pipeline):
    for name, stage in (("lm", "pretrain"), ("ft", "finetune-lm")):
        d = pipeline[name]
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        assert cfg["_meta"]["stage"] == stage and cfg["_meta"]["version"] and cfg["_meta"]["argv"]
        assert cfg["model"]["emb_sz"] == 16
        vocab = json.loads((d / "vocab.json").read_text())
        assert vocab[:3] == ["xxunk", "xxpad", "xxbos"] and len(vocab) % 8 == 0
        lm = torch.load(d / "lm.pth", weights_only=True)
        assert lm["0.encoder.weight"].shape == (len(vocab), 16)
        enc = torch.load(d / "encoder.pth", weights_only=True)
        assert torch.equal(enc["encoder.weight"], lm["0.encoder.weight"])
        lines = [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]
        assert lines and all({"train_loss", "valid_loss", "accuracy", "perplexity", "lr", "seconds",
                              "tokens_per_s"} <= set(ln) for ln in lines)
        results = json.loads((d / "results.json").read_text())
        assert results["valid_loss"] > 0 and results["vocab_size"] == len(vocab)
        assert not list(d.parent.glob(".*partial"))
    ft_lines = [json.loads(ln) for ln in (pipeline["ft"] / "metrics.jsonl").read_text().splitlines()]
    assert [ln["phase"] for ln in ft_lines] == ["frozen", "unfrozen", "unfrozen"]


def test_finetuning_keeps_pretrained_rows_for_known_words(pipeline):
    old_vocab = json.loads((pipeline["lm"] / "vocab.json").read_text())
    new_vocab = json.loads((pipeline["ft"] / "vocab.json").read_text())
    results = json.loads((pipeline["ft"] / "results.json").read_text())
    shared = set(old_vocab) & set(new_vocab)
    assert results["vocab_overlap"] == pytest.approx(sum(w in shared for w in new_vocab) / len(new_vocab))


def test_classifier_beats_chance_and_reports_figures(pipeline):
    d = pipeline["clf"]
    results = json.loads((d / "results.json").read_text())
    assert results["labels"] == ["neg", "pos"] and json.loads((d / "labels.json").read_text()) == ["neg", "pos"]
    assert results["valid_accuracy"] >= 0.8, results
    assert results["test_accuracy"] >= 0.8 and 0 < results["test_macro_f1"] <= 1 and results["test_n"] == 60
    assert json.loads((d / "vocab.json").read_text()) == json.loads((pipeline["ft"] / "vocab.json").read_text())
    model = torch.load(d / "model.pth", weights_only=True)
    assert any(k.startswith("1.") for k in model)  # the head
    phases = [json.loads(ln)["phase"] for ln in (d / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["freeze_to -1"] * 3 + ["freeze_to 0"] * 8


def test_generate_is_reproducible_with_a_seed(pipeline):
    run = pipeline["run"]
    args = ("generate", "--run-dir", pipeline["ft"], "--prompt", "The history of", "--n-words", "12",
            "--temperature", "0.8", "--seed", "0", "--n-samples", "2")
    a, b = run(*args), run(*args)
    assert a.exit_code == 0, a.output
    assert a.output == b.output and a.output.startswith("[1] ") and "[2] " in a.output
    assert "xxunk" not in a.output
    c = run(*args[:-4], "--seed", "1", "--n-samples", "2")
    assert c.output != a.output


def test_finished_run_is_refused_then_replaced_only_with_force(pipeline):
    run, lm = pipeline["run"], pipeline["lm"]
    before = (lm / "lm.pth").read_bytes()
    res = run("pretrain", "-c", TINY, "--set", f"data.source={pipeline['tmp'] / 'missing.xml'}", "--run-dir", lm)
    assert res.exit_code == 2 and "--force" in res.output
    res = run("pretrain", "-c", TINY, "--set", f"data.source={pipeline['tmp'] / 'missing.xml'}", "--run-dir", lm,
              "--force")
    assert res.exit_code == 2 and "data.source" in res.output and "not found" in res.output
    assert (lm / "lm.pth").read_bytes() == before  # a failed --force run changed nothing
    assert not list(lm.parent.glob(".*partial"))


def test_a_classifier_run_is_not_a_language_model(pipeline):
    run, clf = pipeline["run"], pipeline["clf"]
    res = run("finetune-lm", "-c", TINY, "--set", f"data.train={pipeline['tmp'] / 'train.csv'}",
              "--set", f"init.from_run={clf}", "--run-dir", pipeline["tmp"] / "ft2")
    assert res.exit_code == 2 and "is a train-clf run" in res.output and "init.from_run" in res.output
    res = run("generate", "--run-dir", clf)
    assert res.exit_code == 2 and "is a train-clf run" in res.output


class _Evil:
    """Unpickling this would create a file: the loader must refuse it instead."""
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (str(self.sentinel), "w"))


def test_weights_that_would_run_code_are_refused(pipeline, tmp_path):
    import shutil
    run_dir = tmp_path / "evil-lm"
    shutil.copytree(pipeline["ft"], run_dir)
    sentinel = tmp_path / "pwned"
    torch.save({"x": _Evil(sentinel)}, run_dir / "lm.pth")
    res = pipeline["run"]("generate", "--run-dir", run_dir)
    assert res.exit_code == 2 and "lm.pth" in res.output and "refused" in res.output
    assert not sentinel.exists()


def test_downstream_sizes_come_from_the_upstream_run(pipeline):
    res = pipeline["run"]("train-clf", "--set", "data.train=x.csv", "--set", f"init.from_run={pipeline['ft']}",
                          "--print-config")
    assert res.exit_code == 0, res.output
    model = yaml.safe_load(res.output)["model"]
    assert (model["emb_sz"], model["n_hid"], model["n_layers"]) == (16, 32, 2)
