"""predict / evaluate / export / report, the backward pipeline and the fwd+bwd ensemble (the session's chain)."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import TINY


@pytest.fixture
def chain(chain, cli):
    """The session's forward and backward chains (conftest.chain) and a CLI runner."""
    return {**chain, "run": cli}


def _predict(chain, *models, out_name="p.csv", inp=None):
    out = chain["tmp"] / out_name
    args = [a for m in models for a in ("--model", chain["tmp"] / m)]
    res = chain["run"]("predict", *args, "--input", inp or chain["test"], "--output", out)
    assert res.exit_code == 0, res.output
    return pd.read_csv(out)


def test_predict_writes_rows_prediction_and_probabilities(chain):
    df = _predict(chain, "clf")
    src = pd.read_csv(chain["test"])
    assert list(df.columns) == list(src.columns) + ["prediction", "prob_neg", "prob_pos"]
    assert len(df) == len(src) and df["text"].tolist() == src["text"].tolist()
    assert np.allclose(df[["prob_neg", "prob_pos"]].sum(axis=1), 1, atol=1e-5)
    assert (df["prediction"] == np.where(df["prob_pos"] > df["prob_neg"], "pos", "neg")).all()


def test_evaluate_matches_the_training_run_and_a_direct_computation(chain):
    from sklearn.metrics import accuracy_score, f1_score
    out = chain["tmp"] / "eval"
    res = chain["run"]("evaluate", "--model", chain["tmp"] / "clf", "--input", chain["test"], "--output", out)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    trained = json.loads((chain["tmp"] / "clf" / "results.json").read_text())
    assert report["accuracy"] == pytest.approx(trained["test_accuracy"])  # learn.get_preds in train-clf
    truth = pd.read_csv(chain["test"])["label"].map({"neg": 0, "pos": 1}).to_numpy()
    pred = np.load(out / "probabilities.npy").argmax(1)
    assert report["accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert report["macro_f1"] == pytest.approx(f1_score(truth, pred, average="macro"))
    assert np.array(report["confusion"]["matrix"]).sum() == len(truth)
    assert sum(c["support"] for c in report["per_class"].values()) == len(truth)
    assert (out / "confusion.png").stat().st_size > 0 and "macro-F1" in res.output


def test_exported_bundle_predicts_the_same_and_loads_without_pickle(chain):
    from ulmfit_cli import load_classifier
    bundle = chain["tmp"] / "bundle"
    res = chain["run"]("export", "--model", chain["tmp"] / "clf", "--output", bundle)
    assert res.exit_code == 0, res.output
    # and the baseline's files where validation chose to blend it in (it depends on the libraries' versions)
    blended = ({"blend.json", "baseline.json", "baseline.npz"} if (chain["tmp"] / "clf" / "blend.json").is_file()
               else set())
    assert {p.name for p in bundle.iterdir()} == {"model.pth", "vocab.json", "labels.json", "classifier.json",
                                                  "card.json"} | blended
    from_run, from_bundle = _predict(chain, "clf", out_name="a.csv"), _predict(chain, "bundle", out_name="b.csv")
    assert np.array_equal(from_run[["prob_neg", "prob_pos"]].to_numpy(), from_bundle[["prob_neg", "prob_pos"]].to_numpy())
    clf = load_classifier(bundle, device="cpu")
    texts = pd.read_csv(chain["test"])["text"].tolist()
    assert clf.predict(texts) == from_run["prediction"].tolist()
    res = chain["run"]("export", "--model", chain["tmp"] / "clf", "--output", bundle)
    assert res.exit_code == 2 and "--force" in res.output


def test_ensemble_averages_forward_and_backward(chain):
    fwd, bwd = _predict(chain, "clf", out_name="f.csv"), _predict(chain, "clf-bwd", out_name="r.csv")
    both = _predict(chain, "clf", "clf-bwd", out_name="fb.csv")
    cols = ["prob_neg", "prob_pos"]
    assert np.allclose(both[cols].to_numpy(), (fwd[cols].to_numpy() + bwd[cols].to_numpy()) / 2, atol=1e-6)
    assert not np.allclose(fwd[cols].to_numpy(), bwd[cols].to_numpy())  # the backward model is another model


def test_backward_chain_is_consistent(chain):
    res = chain["run"]("train-clf", "-c", TINY, "--set", f"data.train={chain['train']}",
                       "--set", f"init.from_run={chain['tmp'] / 'lm-bwd'}", "--run-dir", chain["tmp"] / "mixed")
    assert res.exit_code == 2 and "trained backwards" in res.output and "data.backwards=true" in res.output
    res = chain["run"]("generate", "--run-dir", chain["tmp"] / "lm-bwd", "--prompt", "the film", "--n-words", "6",
                       "--seed", "0")
    assert res.exit_code == 0 and res.output.strip().endswith("the film")  # it writes what comes before


def test_predict_reads_stdin_and_jsonl(chain, tmp_path):
    from typer.testing import CliRunner

    from ulmfit_cli.cli import app
    res = CliRunner().invoke(app, ["predict", "--model", str(chain["tmp"] / "clf"), "--input", "-",
                                   "--output", "-"], input="great wonderful film\nawful boring film\n")
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("text,prediction,prob_neg,prob_pos") and len(lines) == 3
    jl = tmp_path / "in.jsonl"
    jl.write_text('{"id": 1, "review": "great film"}\n{"id": 2, "review": "awful film"}\n')
    res = chain["run"]("predict", "--model", chain["tmp"] / "clf", "--input", jl, "--text-col", "review",
                       "--output", tmp_path / "out.jsonl")
    assert res.exit_code == 0, res.output
    rows = [json.loads(ln) for ln in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2] and all("prediction" in r for r in rows)


def test_training_runs_have_plots_and_a_report(chain):
    for name in ("lm", "clf"):
        assert {p.name for p in (chain["tmp"] / name / "plots").iterdir()} == {"loss.png", "lr.png"}
    res = chain["run"]("report", chain["tmp"] / "clf")
    assert res.exit_code == 0 and "valid_loss" in res.output and "test_accuracy" in res.output
    assert "training time" in res.output


def test_bad_inputs_to_predict_and_evaluate(chain, tmp_path):
    run, clf = chain["run"], chain["tmp"] / "clf"
    res = run("predict", "--model", clf, "--input", chain["test"], "--text-col", "review")
    assert res.exit_code == 2 and "no column 'review'" in res.output and "text, label" in res.output
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    res = run("predict", "--model", clf, "--input", empty, "--output", tmp_path / "x.csv")
    assert res.exit_code == 2 and "no rows" in res.output
    res = run("predict", "--model", chain["tmp"] / "lm", "--input", chain["test"])
    assert res.exit_code == 2 and "is a pretrain run" in res.output and "train-clf" in res.output
    other = tmp_path / "other.csv"
    other.write_text("text,label\n" + "some great words here,pos\nawful,neg\n" * 20)
    res = run("train-clf", "-c", TINY, "--set", f"data.train={other}", "--set", "train.stages=[{freeze_to: 0}]",
              "--run-dir", tmp_path / "other-clf")
    assert res.exit_code == 0, res.output
    res = run("predict", "--model", clf, "--model", tmp_path / "other-clf", "--input", chain["test"])
    assert res.exit_code == 2 and "different vocabularies" in res.output
    odd = tmp_path / "odd.csv"
    odd.write_text("text,label\ngreat film,pos\nmeh,neutral\nugh,angry\n")
    res = run("evaluate", "--model", clf, "--input", odd, "--output", tmp_path / "ev")
    assert res.exit_code == 2 and "never saw: angry, neutral" in res.output
