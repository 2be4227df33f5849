"""The classifier tasks beyond the plain one: the best epoch kept (`train.keep`, `train.monitor`), early
stopping across the unfreezing stages (`train.patience`), class weights and the balanced sampler,
TensorBoard, several text fields."""
from __future__ import annotations

import json

import torch

from conftest import TINY
from ulmfit_cli.train.checkpoint_files import read_checkpoint

MANY_EPOCHS = "train.stages=[{freeze_to: -1, epochs: 2, lr: 0.05}, {freeze_to: 0, epochs: 6, lr: 0.05}]"


def _train(cli, chain, run_dir, *sets):
    args = [a for s in sets for a in ("--set", s)]
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set", f"init.from_run={chain['ft']}",
              "--set", MANY_EPOCHS, *args, "--run-dir", run_dir)
    assert res.exit_code == 0, res.output
    return json.loads((run_dir / "results.json").read_text()), res.output


def _lines(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_keep_best_puts_the_best_epochs_model_in_model_pth(cli, chain, tmp_path):
    results, _ = _train(cli, chain, tmp_path / "best", "train.keep=best", "train.monitor=valid_loss")
    lines = _lines(tmp_path / "best")
    losses = [r["valid_loss"] for r in lines]
    best = min(range(len(losses)), key=losses.__getitem__) + 1
    assert results["keep"] == "best" and results["kept_epoch"] == results["best_epoch"] == best
    assert abs(results["best_valid_loss"] - losses[best - 1]) < 1e-5
    weights = torch.load(tmp_path / "best" / "model.pth", weights_only=True)
    kept = read_checkpoint(tmp_path / "best" / "checkpoints" / "best.pt")["model"]
    assert all(torch.equal(weights[k], kept[k]) for k in weights)
    last = read_checkpoint(tmp_path / "best" / "checkpoints" / "last.pt")["model"]
    if best != len(lines):  # the validation figures in results.json are those of the kept epoch
        assert not all(torch.equal(weights[k], last[k]) for k in weights)
    assert abs(results["valid_accuracy"] - lines[best - 1]["accuracy"]) < 1e-6


def test_keep_last_is_the_last_epoch(cli, chain, tmp_path):
    results, _ = _train(cli, chain, tmp_path / "last", "train.monitor=accuracy", "train.keep=last")
    n = len(_lines(tmp_path / "last"))
    assert results["keep"] == "last" and results["kept_epoch"] == n == 8
    accs = [r["accuracy"] for r in _lines(tmp_path / "last")]
    assert results["best_epoch"] == accs.index(max(accs)) + 1  # the first epoch with the highest accuracy


def test_patience_ends_the_stage_after_epochs_without_a_better_figure(cli, chain, tmp_path):
    results, out = _train(cli, chain, tmp_path / "p", "train.patience=1", "train.monitor=valid_loss")
    losses = [r["valid_loss"] for r in _lines(tmp_path / "p")]
    # each epoch improved on all before it, except the last, which ended the stage
    assert all(losses[i] < min(losses[:i]) for i in range(1, len(losses) - 1))
    assert results["stopped_early"] and len(losses) < 8, losses  # on this data: after epoch 2 of 8 (CPU, seed 42)
    assert losses[-1] >= min(losses[:-1]) and "train.patience: no better valid_loss for 1 epochs" in out


def _imbalanced(tmp_path, chain):
    """The test set's texts with 'pos' kept at one in five: 4 to 1."""
    import pandas as pd
    df = pd.read_csv(chain["train"])
    df = pd.concat([df[df.label == "neg"], df[df.label == "pos"].iloc[::5]])
    f = tmp_path / "imbalanced.csv"
    df.to_csv(f, index=False)
    return f, df


def test_class_weights_balanced_and_given(cli, chain, tmp_path):
    f, df = _imbalanced(tmp_path, chain)
    base = ["train.stages=[{freeze_to: 0, epochs: 1}]", f"data.train={f}", "data.valid_pct=0.2"]
    results, _ = _train(cli, chain, tmp_path / "w", *base, "train.class_weights=balanced")
    w = results["class_weights"]
    assert set(w) == {"neg", "pos"} and w["pos"] > 1 > w["neg"]  # n / (2 * count): the rare class weighs more
    results, _ = _train(cli, chain, tmp_path / "g", *base, "train.class_weights={pos: 3}")
    assert results["class_weights"] == {"neg": 1.0, "pos": 3.0}
    plain, _ = _train(cli, chain, tmp_path / "plain", *base)
    assert plain["class_weights"] is None
    # the weights change the loss, so the training: the same seed gives another model
    a = torch.load(tmp_path / "g" / "model.pth", weights_only=True)
    b = torch.load(tmp_path / "plain" / "model.pth", weights_only=True)
    assert not all(torch.equal(a[k], b[k]) for k in a)
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={f}", "--set", f"init.from_run={chain['ft']}",
              "--set", "train.class_weights={posit: 2}", "--run-dir", tmp_path / "bad")
    assert res.exit_code == 2 and "'posit' is not a class" in res.output and "neg, pos" in res.output


def test_balanced_sampler_draws_the_classes_equally_often(chain):
    import numpy as np

    from ulmfit_cli.train.loaders import balanced_weights, clf_dl
    ys = np.array([0] * 80 + [1] * 20)
    docs = [np.arange(3 + i % 7) + 2 for i in range(100)]
    vocab = ["xxunk", "xxpad"] + [f"w{i}" for i in range(20)]
    dl = clf_dl(docs, ys, vocab, 10, 16, torch.device("cpu"), shuffle=True, weights=balanced_weights(ys))
    drawn = np.concatenate([yb.numpy() for _ in range(20) for _, yb in dl])
    assert abs(drawn.mean() - 0.5) < 0.05  # without the weights: 0.2
    state = dl.state_dict()
    first = [yb.tolist() for _, yb in dl]
    dl.load_state_dict(state)
    assert [yb.tolist() for _, yb in dl] == first  # the draw comes from the loader's own generator


def test_tensorboard_logger_writes_event_files_into_the_run_dir(cli, chain, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    results, _ = _train(cli, chain, tmp_path / "tb", "run.loggers=[tensorboard]",
                        "train.stages=[{freeze_to: -1, epochs: 1}, {freeze_to: 0, epochs: 2}]")
    folder = tmp_path / "tb" / "tensorboard"
    assert folder.is_dir() and list(folder.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(folder))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train_loss", "valid_loss", "accuracy"} <= tags, tags
    assert len(acc.Scalars("valid_loss")) == 3  # one per epoch, over both stages
    assert abs(acc.Scalars("valid_loss")[-1].value - json.loads((tmp_path / "tb" / "metrics.jsonl")
                                                                .read_text().splitlines()[-1])["valid_loss"]) < 1e-4


def _two_fields(tmp_path, chain):
    """The labelled texts cut into a title (first two words) and a body (the rest), label in between."""
    import pandas as pd
    df = pd.read_csv(chain["train"])
    words = df["text"].str.split()
    out = pd.DataFrame({"title": words.str[:2].str.join(" "), "label": df["label"],
                        "body": words.str[2:].str.join(" ")})
    f = tmp_path / "fields.csv"
    out.to_csv(f, index=False)
    return f


def test_several_text_fields_are_joined_with_fastais_field_marks(tmp_path, chain):
    from ulmfit_cli.corpus.tables import read_texts
    from ulmfit_cli.classify.task import SINGLE_LABEL
    f = _two_fields(tmp_path, chain)
    by_name = read_texts(f, "data.train", ["title", "body"], "label", task=SINGLE_LABEL)
    by_position = read_texts(f, "data.train", [0, 2], "label", task=SINGLE_LABEL)
    assert by_name["text"].tolist() == by_position["text"].tolist()
    first = by_name["text"][0]
    assert first.startswith("xxfld 1 ") and " xxfld 2 " in first
    import pandas as pd
    raw = pd.read_csv(f).iloc[0]
    assert first == f"xxfld 1 {raw.title} xxfld 2 {raw.body}"  # fastai's _join_texts(mark_fields=True)


def test_several_text_fields_through_train_predict_and_evaluate(cli, chain, tmp_path):
    f = _two_fields(tmp_path, chain)
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={f}", "--set", "data.text_col=[title, body]",
              "--set", f"init.from_run={chain['ft']}", "--set", "train.stages=[{freeze_to: 0, epochs: 2, lr: 0.02}]",
              "--run-dir", tmp_path / "clf")
    assert res.exit_code == 0, res.output
    res = cli("predict", "--model", tmp_path / "clf", "--input", f, "--output", tmp_path / "p.csv")  # no --text-col
    assert res.exit_code == 0, res.output
    import pandas as pd
    preds = pd.read_csv(tmp_path / "p.csv")
    assert list(preds.columns[:3]) == ["title", "label", "body"] and len(preds) == 200
    res = cli("evaluate", "--model", tmp_path / "clf", "--input", f, "--output", tmp_path / "ev")
    assert res.exit_code == 0, res.output
    same = cli("evaluate", "--model", tmp_path / "clf", "--input", f, "--text-col", "title,body",
               "--output", tmp_path / "ev2")
    assert same.exit_code == 0 and json.loads((tmp_path / "ev" / "report.json").read_text())["accuracy"] == \
        json.loads((tmp_path / "ev2" / "report.json").read_text())["accuracy"]
    bundle = tmp_path / "bundle"
    assert cli("export", "--model", tmp_path / "clf", "--output", bundle).exit_code == 0
    from ulmfit_cli import load_classifier
    assert load_classifier(bundle, device="cpu").text_col == ["title", "body"]
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={f}", "--set", "data.text_col=[title, 7]",
              "--set", f"init.from_run={chain['ft']}", "--print-config")
    assert res.exit_code == 0  # positions are checked against the file when it is read
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={f}", "--set", "data.text_col=[title, 7]",
              "--set", f"init.from_run={chain['ft']}", "--run-dir", tmp_path / "bad")
    assert res.exit_code == 2 and "position 7 is out of range" in res.output and "title, label, body" in res.output


def test_the_baseline_is_reported_beside_the_classifier_and_reproducible(cli, chain, tmp_path):
    results = json.loads((chain["clf"] / "results.json").read_text())
    assert results["baseline"] == "tfidf-logreg" and results["baseline_C"] in (1.0, 10.0, 100.0)
    assert 0.5 < results["baseline_test_accuracy"] <= 1 and results["baseline_valid_macro_f1"] > 0
    report = cli("report", chain["clf"]).output
    assert "baseline_test_accuracy" in report and "test_accuracy" in report
    again, _ = _train(cli, chain, tmp_path / "again", "data.test=" + str(chain["test"]), "data.valid_pct=0.25",
                      "train.stages=[{freeze_to: 0, epochs: 1}]")
    assert {k: v for k, v in again.items() if k.startswith("baseline_") and k != "baseline_seconds"} == \
        {k: v for k, v in results.items() if k.startswith("baseline_") and k != "baseline_seconds"}
    # evaluate refits it on the run's training split: on the test file, the figures of results.json
    res = cli("evaluate", "-m", chain["clf"], "-i", chain["test"], "-o", tmp_path / "eval")
    assert res.exit_code == 0, res.output
    base = json.loads((tmp_path / "eval" / "report.json").read_text())["baseline"]
    assert base["accuracy"] == results["baseline_test_accuracy"] and "baseline (tfidf-logreg" in res.output
    off, _ = _train(cli, chain, tmp_path / "off", "data.baseline=false", "train.stages=[{freeze_to: 0, epochs: 1}]")
    assert not any(k.startswith("baseline") for k in off)
    res = cli("evaluate", "-m", tmp_path / "off", "-i", chain["test"], "-o", tmp_path / "eval-off")
    assert res.exit_code == 0 and "baseline" not in json.loads((tmp_path / "eval-off" / "report.json").read_text())


def test_lr_find_prints_fastais_suggestions_and_writes_no_run_dir(cli, chain, tmp_path):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in chain["ft"].iterdir())
    would_be = tmp_path / "would-be-run"
    res = cli("lr-find", "train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set",
              f"init.from_run={chain['ft']}", "--set", f"run.dir={would_be}", "--set", "data.baseline=false",
              "--phase", "3", "--iters", "30", "-o", tmp_path / "lr.png")
    assert res.exit_code == 0, res.output
    assert "phase 3 (freeze_to 0); the config trains it at 1.00e-02" in res.output
    found = {line.split()[0]: float(line.split()[1]) for line in res.output.splitlines()
             if line.startswith("  ") and line.split()[0] in ("minimum", "steep", "valley", "slide")}
    assert set(found) == {"minimum", "steep", "valley", "slide"} and all(1e-7 <= v <= 10 for v in found.values())
    assert (tmp_path / "lr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not would_be.exists() and not list(tmp_path.glob(".*"))  # no run dir, no staging folder
    assert sorted((p.name, p.stat().st_mtime_ns) for p in chain["ft"].iterdir()) == before
    res = cli("lr-find", "finetune-lm", "-c", TINY, "--set", f"data.train={chain['train']}", "--set",
              f"init.from_run={chain['lm']}", "--iters", "20", "-o", tmp_path / "ft.png")
    assert res.exit_code == 0 and "phase 0 (frozen)" in res.output, res.output
    res = cli("lr-find", "pretrain", "-c", TINY, "--set", f"data.source={chain['dump']}", "--iters", "20",
              "-o", tmp_path / "lm.png")
    assert res.exit_code == 0 and "lr-find: pretrain, phase 0 (train)" in res.output, res.output
    res = cli("lr-find", "train-clf", "-c", TINY, "--set", f"data.train={chain['train']}", "--set",
              f"init.from_run={chain['ft']}", "--phase", "9", "-o", tmp_path / "bad.png")
    assert res.exit_code == 2 and "--phase: 9 is out of range; train.stages has 4" in res.output
