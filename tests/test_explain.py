"""Explanations (`inference.explain`): one score per token in reading order (forward, backward, ensemble),
checked against finite differences of the model itself; the deletion (faithfulness) test on a real TREC-6
classifier; different targets give different scores; multi-label and regression; the baseline's part of a
blend; `predict --explain` as CSV and JSONL; evaluate's report.html, self-contained, in headless Chromium."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from browser import headless, needs_chromium
from conftest import ROOT, TINY, write_tasks_csv

pytest.importorskip("captum")
from ulmfit_cli.inference.explain import explain  # noqa: E402  (after the skip: it imports Captum)

TREC = ROOT / "data" / "trec6"
STAGES = "train.stages=[{freeze_to: -1, epochs: 2, lr: 0.05}, {freeze_to: 0, epochs: 3, lr: 0.02}]"


@pytest.fixture(scope="module")
def trec(tmp_path_factory):
    """A small TREC-6 question classifier trained from scratch on the 5,452 real questions (test accuracy
    about 84 %, blended with its baseline about 90 %): the demo's data, at a size a test can train (~25 s)."""
    from ulmfit_cli import api
    run = tmp_path_factory.mktemp("trec") / "clf"
    api.train("train-clf", [ROOT / "configs" / "trec6" / "train-clf.yaml", TINY],
              [f"data.train={TREC / 'train.csv'}", f"data.test={TREC / 'test.csv'}", "init.from_run=null",
               "train.stages=[{freeze_to: 0, epochs: 4, lr: 0.02}]", "train.bs=32", "model.emb_sz=32",
               "model.n_hid=64"], run_dir=run)
    return run


@pytest.fixture(scope="module")
def tasks(chain, tmp_path_factory):
    """A multi-label and a regression classifier on the chain's fine-tuned LM."""
    from ulmfit_cli import api
    tmp = tmp_path_factory.mktemp("tasks")
    train, test = write_tasks_csv(tmp / "train.csv", 160, seed=1), write_tasks_csv(tmp / "test.csv", 40, seed=2)
    out = {"test": test}
    for name, sets in (("multi", ("data.label_col=[pos, neg]",)),
                       ("regression", ("data.task=regression", "data.label_col=score"))):
        api.train("train-clf", [TINY], [f"data.train={train}", f"data.test={test}", f"init.from_run={chain['ft']}",
                                        STAGES, "train.min_steps=null", *sets], run_dir=tmp / name)
        out[name] = tmp / name
    return out


def _finite_differences(clf, text: str, target: int, eps: float = 1e-6) -> np.ndarray:
    """Gradient x input of each token in reading order, without Captum: the output's change when one token's
    embedding is scaled by 1 + eps, over eps, in float64. A backward model reads the text reversed."""
    from ulmfit_cli.corpus.text import PAD
    from ulmfit_cli.inference.net import InferenceNet
    ids = clf.token_ids([text])[0]
    model_ids = ids[::-1].copy() if clf.spec.backwards else ids
    x = torch.from_numpy(model_ids)[None]
    from ulmfit_cli.inference.classifier import Classifier
    model = Classifier.load(clf.path, "cpu").model.double()  # a copy of the weights, in float64
    net = InferenceNet(model, clf.index[PAD], clf.task.activation, clf.spec.bptt, clf.spec.max_len)
    with torch.no_grad():
        base = net(x)[0, target].item()
    out = []
    for t in range(len(ids)):
        pos = len(ids) - 1 - t if clf.spec.backwards else t

        def scale(module, inputs, output, pos=pos):
            output = output.clone()
            output[:, pos] *= 1 + eps
            return output
        handle = net.embedding.register_forward_hook(scale)
        try:
            with torch.no_grad():
                out.append((net(x)[0, target].item() - base) / eps)
        finally:
            handle.remove()
    return np.array(out)


@pytest.mark.parametrize("run", ["clf", "clf-bwd"])
def test_scores_are_per_token_in_reading_order_and_equal_the_models_own_gradient(chain, run):
    from ulmfit_cli.inference.classifier import load_classifier
    clf = load_classifier(chain[run], device="cpu")
    texts = pd.read_csv(chain["test"])["text"].tolist()[:6]
    found = explain(clf, texts, method="grad_input")
    weight = 1.0 if clf.blend is None else clf.blend[0]
    for text, e in zip(texts, found):
        assert e.tokens == clf.tokens([text])[0]
        assert e.scores.shape == (1, len(e.tokens))
        j = clf.labels.index(e.targets[0])
        assert e.targets == [clf.predict([text])[0]]
        fd = _finite_differences(clf, text, j) * weight
        assert np.allclose(e.scores[0], fd, atol=1e-3 * np.abs(fd).max() + 1e-8), (e.scores[0], fd)
    if run == "clf-bwd":  # flipped, the scores would not match: the test sees the order
        e = found[0]
        fd = _finite_differences(clf, texts[0], clf.labels.index(e.targets[0])) * weight
        assert not np.allclose(e.scores[0][::-1], fd, atol=2e-3 * np.abs(fd).max())


def test_an_ensemble_averages_its_members_normalised_scores(chain):
    from ulmfit_cli import load_classifier
    pair = load_classifier(chain["clf"], chain["clf-bwd"], runtime="torch")
    texts = pd.read_csv(chain["test"])["text"].tolist()[:4]
    target = pair.labels[0]
    found = explain(pair, texts, target=target)
    members = [explain(m, texts, target=target) for m in pair.members]
    for i, e in enumerate(found):
        assert e.tokens == pair.tokens([texts[i]])[0] and e.scores.shape == (1, len(e.tokens))
        mean = np.mean([m[i].scores / np.abs(m[i].scores).max() for m in members], axis=0)
        assert np.allclose(e.scores, mean, atol=1e-6)


def test_attributed_deletion_drops_the_probability_more_than_random_on_trec6(trec):
    """ERASER's comprehensiveness: removing the k best-scored tokens must hurt the predicted class clearly
    more than removing k random ones, for k = 1, 2, 3, with Integrated Gradients and gradient x input."""
    from ulmfit_cli.inference.classifier import Classifier
    from ulmfit_cli.inference.explain import deletion
    clf = Classifier.load(trec, "cpu")
    texts = pd.read_csv(TREC / "test.csv")["text"].tolist()[:300]
    for method in ("ig", "grad_input"):
        for k, drops in deletion(clf, texts, ks=(1, 2, 3), draws=5, method=method).items():
            a, r = drops["attributed"], drops["random"]
            diff = a - r  # paired by text
            assert len(a) > 250
            assert diff.mean() > 3 * diff.std() / np.sqrt(len(diff)), (method, k, a.mean(), r.mean())
            assert a.mean() > 1.5 * r.mean(), (method, k, a.mean(), r.mean())


def test_two_targets_of_one_text_get_different_scores(trec):
    """fastinference's old bug (#31): every class got the same attention."""
    from ulmfit_cli import load_classifier
    clf = load_classifier(trec, runtime="torch")
    text = "Who was the first man to walk on the moon ?"
    predicted = explain(clf, [text])[0]
    for method in ("ig", "grad_input"):
        hum, loc = (explain(clf, [text], target=t, method=method)[0] for t in ("HUM", "LOC"))
        assert hum.targets == ["HUM"] and loc.targets == ["LOC"]
        assert not np.allclose(hum.scores, loc.scores, atol=1e-4)
    assert predicted.targets == [clf.predict([text])[0]]
    assert np.allclose(predicted.scores, explain(clf, [text], target=predicted.targets[0])[0].scores)
    with pytest.raises(Exception, match="not one of the model's outputs"):
        explain(clf, [text], target="PLANET")


def test_integrated_gradients_add_up_to_the_change_of_output(trec):
    """IG's completeness, for the model (Captum's delta) and for the blend's baseline (our NumPy integral):
    the scores of a text sum to its output minus the baseline input's."""
    from ulmfit_cli import load_classifier
    clf = load_classifier(trec, runtime="torch")
    assert clf.blend is not None
    weight, baseline = clf.blend
    texts = pd.read_csv(TREC / "test.csv")["text"].tolist()[:20]
    for text, e in zip(texts, explain(clf, texts)):
        assert e.delta is not None and e.delta < 0.05
        j = clf.labels.index(e.targets[0])
        names, values = baseline.attributions(text, j, (np.arange(200) + 0.5) / 200)
        zero = baseline.task.linear_apply(baseline.intercept[None])[0, j]
        assert abs(values.sum() - (baseline.outputs([text])[0, j] - zero)) < 1e-4
        assert e.baseline_terms is not None and len(e.baseline_terms[0]) == 10
        top = dict(e.baseline_terms[0])
        best = int(np.argmax(np.abs(values)))
        assert names[best] in top and abs(top[names[best]] - values[best] * (1 - weight)) < 1e-3


def test_multi_label_and_regression_explanations(tasks):
    from ulmfit_cli import load_classifier
    texts = pd.read_csv(tasks["test"])["text"].tolist()[:8]
    multi = load_classifier(tasks["multi"], runtime="torch")
    for text, e, predicted, probs in zip(texts, explain(multi, texts), multi.predict(texts),
                                         multi.predict_proba(texts)):
        expected = list(predicted) or [multi.labels[int(probs.argmax())]]
        assert e.targets == expected and e.scores.shape == (len(expected), len(e.tokens))
        assert e.tokens == multi.tokens([text])[0]
    both = explain(multi, texts[:1], target="neg")[0]
    assert both.targets == ["neg"] and both.scores.shape[0] == 1
    reg = load_classifier(tasks["regression"], runtime="torch")
    for e, value in zip(explain(reg, texts, method="grad_input"), reg.predict(texts)):
        assert e.targets == reg.labels and e.scores.shape == (1, len(e.tokens)) and e.prediction == value
        top = e.top(3)
        assert [abs(s) for _, s in top] == sorted((abs(s) for _, s in top), reverse=True)


def test_windows_and_cuts_of_long_texts_are_stated(chain):
    from ulmfit_cli.inference.classifier import load_classifier
    clf = load_classifier(chain["clf"], device="cpu")
    long = " ".join(pd.read_csv(chain["test"])["text"].tolist() * 5)
    e = explain(clf, [long], method="grad_input")[0]
    n = len(e.tokens)
    bptt = clf.spec.bptt  # SentenceEncoder keeps the last whole bptt chunks within max_len
    assert n > clf.spec.max_len and e.window == (-(-n // bptt) * bptt - clf.spec.max_len // bptt * bptt, n)
    assert e.cut_chars == 0
    assert any("pools over tokens" in note for note in e.notes)
    clf.spec = clf.spec.model_copy(update={"max_chars": 2_000})  # as if trained with data.max_chars 2000
    e = explain(clf, [long], method="grad_input")[0]
    assert e.cut_chars == len(long) - 2_000 and e.tokens == clf.tokens([long[-2_000:]])[0]
    assert any("characters were cut" in note for note in e.notes)


def test_predict_explain_writes_the_top_tokens_to_csv_and_every_score_to_jsonl(cli, trec, tmp_path):
    from ulmfit_cli import load_classifier
    texts = pd.read_csv(TREC / "test.csv")["text"].tolist()[:5]
    src = tmp_path / "in.csv"
    pd.DataFrame({"text": texts}).to_csv(src, index=False)
    r = cli("predict", "-m", trec, "-i", src, "-o", tmp_path / "out.csv", "--explain", "--top-k", "3")
    assert r.exit_code == 0, r.output
    found = explain(load_classifier(trec, runtime="torch"), texts)
    cells = pd.read_csv(tmp_path / "out.csv")["explanation"].tolist()
    for cell, e in zip(cells, found):
        pairs = [p.rsplit(":", 1) for p in cell.split(" ")]
        assert len(pairs) == 3 and [t for t, _ in pairs] == [t for t, _ in e.top(3)]
        assert all(t in e.tokens and t != "xxbos" for t, _ in pairs)
        assert np.allclose([float(s) for _, s in pairs], [s for _, s in e.top(3)], atol=1e-3)
    r = cli("predict", "-m", trec, "-i", src, "-o", tmp_path / "out.jsonl", "--explain")
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    for row, e in zip(rows, found):
        ex = row["explanation"]
        assert ex["tokens"] == e.tokens and len(ex["scores"][0]) == len(e.tokens)
        assert np.allclose(ex["scores"], e.scores, atol=1e-5) and ex["targets"] == [row["prediction"]]
    r = cli("predict", "-m", trec, "-i", src, "-o", tmp_path / "x.csv", "--explain", "--explain-method", "lime")
    assert r.exit_code != 0 and "--explain-method" in r.output and not (tmp_path / "x.csv").exists()


def _report_page(path: Path) -> str:
    page = path.read_text(encoding="utf-8")
    assert "http" not in page and "src='data:image/png;base64," in page  # nothing fetched from anywhere
    return page


@needs_chromium
def test_evaluate_writes_a_self_contained_report_that_chromium_opens(cli, trec, tmp_path):
    from selenium.webdriver.common.by import By
    out = tmp_path / "eval"
    r = cli("evaluate", "-m", trec, "-i", TREC / "test.csv", "-o", out)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert 0 <= report["calibration"]["ece"] <= 1
    _report_page(out / "report.html")
    probs = np.load(out / "probabilities.npy")
    truth = pd.read_csv(TREC / "test.csv")["label"].tolist()
    labels = report["confusion"]["labels"]
    wrong = [i for i, (p, t) in enumerate(zip(probs.argmax(1), truth)) if labels[p] != t]
    with headless(1000, 900) as driver:
        driver.get((out / "report.html").as_uri())
        tables = driver.find_elements(By.CSS_SELECTOR, "table.cases")
        rows = tables[0].find_elements(By.CSS_SELECTOR, "tr")[1:]  # the most confident errors
        assert len(rows) == min(10, len(wrong))
        confidences = []
        for row in rows:
            cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
            assert cells[1] != cells[2]  # true != predicted
            confidences.append(float(cells[3]))
            assert row.find_elements(By.CSS_SELECTOR, "span.w")  # the words are highlighted
        assert confidences == sorted(confidences, reverse=True)
        assert abs(confidences[0] - probs[wrong].max(1).max()) < 1e-3
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        driver.set_window_size(1000, min(driver.execute_script("return document.body.scrollHeight") + 80, 2400))
        shots = Path(os.environ.get("ULMFIT_SCREENSHOTS", tmp_path))  # docs/img/report-page.png: explain.md
        shots.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shots / "report-page.png"))
        assert (shots / "report-page.png").stat().st_size > 10_000


def test_evaluate_pages_for_multi_label_and_regression_and_without_explanations(cli, tasks, tmp_path):
    for name, section in (("multi", "Most confident wrong decisions"), ("regression", "Largest errors")):
        out = tmp_path / name
        r = cli("evaluate", "-m", tasks[name], "-i", tasks["test"], "-o", out, "--no-baseline")
        assert r.exit_code == 0, r.output
        page = _report_page(out / "report.html")
        assert section in page and "class='w" in page
    page = (tmp_path / "multi" / "report.html").read_text()
    assert "Per label" in page and "ECE" in page
    out = tmp_path / "plain"
    r = cli("evaluate", "-m", tasks["regression"], "-i", tasks["test"], "-o", out, "--no-baseline", "--no-explain")
    assert r.exit_code == 0, r.output
    page = _report_page(out / "report.html")
    assert "Largest errors" in page and "class='w" not in page and "--no-explain" in page

