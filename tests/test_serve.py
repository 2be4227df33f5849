"""`ulmfit serve` as a real server subprocess on a free loopback port: every endpoint, every error with its
status and message, answers equal to load_classifier's under concurrent requests, the API key, SIGTERM under
load, an ensemble, a multi-label and a regression model, and the page in headless Chromium."""
from __future__ import annotations

import html
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pandas as pd
import pytest

from browser import headless, needs_chromium
from conftest import NO_TORCH, ROOT, TINY, write_tasks_csv

STAGES = "train.stages=[{freeze_to: -1, epochs: 2, lr: 0.05}, {freeze_to: 0, epochs: 3, lr: 0.02}]"
KEY = "a-test-key-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(*args, timeout: float = 90, ulmfit: tuple = (sys.executable, "-m", "ulmfit_cli")):
    """`ulmfit serve ARGS` on a free loopback port, ready (its warm-up answered), stopped at the end."""
    port = _free_port()
    proc = subprocess.Popen([*ulmfit, "serve", *map(str, args), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def served(chain, tmp_path_factory):
    """The chain's classifier as an ONNX bundle, a multi-label and a regression run (PyTorch), texts."""
    from ulmfit_cli import api
    tmp = tmp_path_factory.mktemp("serve")
    train, test = write_tasks_csv(tmp / "train.csv", 160, seed=1), write_tasks_csv(tmp / "test.csv", 40, seed=2)
    out = {"bundle": api.export(chain["clf"], tmp / "bundle", fmt="onnx"), "tmp": tmp,
           "texts": pd.read_csv(chain["test"])["text"].tolist(), "task_texts": pd.read_csv(test)["text"].tolist()}
    for name, sets in (("multi", ("data.label_col=[pos, neg]",)),
                       ("regression", ("data.task=regression", "data.label_col=score"))):
        api.train("train-clf", [TINY], [f"data.train={train}", f"data.test={test}", f"init.from_run={chain['ft']}",
                                        STAGES, "train.min_steps=null", *sets], run_dir=tmp / name)
        out[name] = tmp / name
    return out


def _predict(url, payload, **kw):
    return httpx.post(f"{url}/v1/predict", json=payload, timeout=60, **kw)


def _concurrently(url, batches: list[list[str]], workers: int = 16) -> list[dict]:
    with ThreadPoolExecutor(workers) as pool:
        responses = list(pool.map(lambda texts: _predict(url, {"texts": texts}), batches))
    assert [r.status_code for r in responses] == [200] * len(batches), [r.text for r in responses if r.status_code != 200]
    return [p for r in responses for p in r.json()["predictions"]]


def test_endpoints_and_concurrent_answers_equal_load_classifier(served):
    from ulmfit_cli import load_classifier
    texts = served["texts"]
    clf = load_classifier(served["bundle"])
    expected = clf.predict_proba(texts)
    with server("--model", served["bundle"], "--max-wait-ms", 20) as (url, _):
        assert httpx.get(f"{url}/health/live").json() == {"status": "live"}
        info = httpx.get(f"{url}/v1/info").json()
        assert info["task"] == "single_label" and info["labels"] == clf.labels and info["runtime"] == "onnx"
        assert info["precision"] == "fp32" and len(info["sha256"]) == 64 and info["card"]["task"] == "single_label"
        rng = np.random.default_rng(0)
        cuts = np.cumsum(rng.integers(1, 6, size=len(texts)))
        batches = [texts[a:b] for a, b in zip([0, *cuts], cuts) if a < len(texts)]
        predictions = _concurrently(url, [b for b in batches if b])
        got = np.array([[p["probabilities"][lbl] for lbl in clf.labels] for p in predictions])
        assert np.allclose(got, expected, atol=1e-6)
        assert [p["label"] for p in predictions] == clf.predict(texts)
        assert {p["model"] for p in predictions} == {info["model_id"]}
        one = _predict(url, {"text": texts[0], "top_k": 1}).json()["predictions"][0]
        assert list(one["probabilities"]) == [clf.predict(texts[:1])[0]]
        metrics = httpx.get(f"{url}/metrics").text
        for name in ("ulmfit_requests_total", "ulmfit_request_seconds_bucket", "ulmfit_batch_texts_bucket",
                     "ulmfit_queue_depth"):
            assert name in metrics
        batched = float(metrics.split("ulmfit_batch_texts_count ")[1].split()[0])
        assert batched < len(batches) + 2  # concurrent requests were merged (and the warm-up)
        assert "/v1/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]
        page = httpx.get(url).text
        assert httpx.get(f"{url}/docs").status_code == 200 and "<textarea" in page
        assert info["card"]["examples"] and html.escape(info["card"]["examples"][0]) in page


def test_every_bad_request_is_a_json_error_with_its_status(served):
    with server("--model", served["bundle"], "--max-texts", 3, "--max-chars", 50, "--max-queue", 1,
                "--max-wait-ms", 800) as (url, _):
        post = f"{url}/v1/predict"
        cases = [
            (httpx.post(post, content=b'{"texts": [', headers={"content-type": "application/json"}), 422, "JSON"),
            (_predict(url, {"texts": "one string"}), 422, "texts"),
            (_predict(url, {"texts": ["a"], "text": "b"}), 422, "either"),
            (_predict(url, {"texts": []}), 422, "empty"),
            (_predict(url, {"text": "a", "colour": "red"}), 422, "colour"),
            (_predict(url, {"text": "a", "top_k": 0}), 422, "top_k"),
            (httpx.post(post, content='{"text": "caf\u00e9"}'.encode("latin-1"),
                        headers={"content-type": "application/json"}), 400, "UTF-8"),
            (_predict(url, {"texts": ["a", "b", "c", "d"]}), 413, "at most 3"),
            (_predict(url, {"text": "x" * 51}), 413, "at most 50"),
            (httpx.post(post, content=b"x" * 2_000_000, headers={"content-type": "application/json"}), 413, "bytes"),
        ]
        for response, status, words in cases:
            assert response.status_code == status, (status, response.text)
            assert words in response.json()["error"], response.text
        with ThreadPoolExecutor(2) as pool:  # the first waits 800 ms for company: the queue (1) is full
            first = pool.submit(_predict, url, {"text": "good words"})
            time.sleep(0.3)
            second = _predict(url, {"text": "bad words"})
            assert first.result().status_code == 200
        assert second.status_code == 503 and second.headers["retry-after"] == "1"
        assert "--max-queue" in second.json()["error"]
        statuses = httpx.get(f"{url}/metrics").text
        assert 'status="413"' in statuses and 'status="400"' in statuses and 'status="503"' in statuses


def test_the_api_key_is_required_and_checked(served, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    with server("--model", served["bundle"], "--api-key-file", key_file) as (url, _):
        for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"X-API-Key": KEY[:-1]}):
            r = _predict(url, {"text": "good words"}, headers=headers)
            assert r.status_code == 401 and "API key" in r.json()["error"]
        assert httpx.get(f"{url}/v1/info").status_code == 401
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
            assert _predict(url, {"text": "good words"}, headers=headers).status_code == 200
        assert httpx.get(f"{url}/health/ready").status_code == 200  # probes need no key
    key_file.write_text("short\n")
    res = subprocess.run([sys.executable, "-m", "ulmfit_cli", "serve", "--model", served["bundle"],
                          "--api-key-file", key_file], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 2 and "at least 16 characters" in res.stderr


def test_sigterm_under_load_answers_the_requests_in_flight_and_exits_0(served):
    with server("--model", served["bundle"], "--max-wait-ms", 5000) as (url, proc):
        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(_predict, url, {"texts": served["texts"][i:i + 3]}) for i in range(12)]
            deadline = time.monotonic() + 30
            while "ulmfit_queue_depth 12.0" not in httpx.get(f"{url}/metrics").text:  # all 12 in the batcher
                assert time.monotonic() < deadline, "the 12 requests never waited in the batcher together"
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)  # while they wait (5 s)
            responses = [f.result() for f in futures]
        assert [r.status_code for r in responses] == [200] * 12
        assert proc.wait(30) == 0


def test_an_ensemble_a_multi_label_and_a_regression_model(chain, served):
    from ulmfit_cli import load_classifier
    for models, texts in (([chain["clf"], chain["clf-bwd"]], served["texts"]),
                          ([served["multi"]], served["task_texts"]), ([served["regression"]], served["task_texts"])):
        clf = load_classifier(*models, device="cpu")
        with server(*[a for m in models for a in ("--model", m)]) as (url, _):
            predictions = _concurrently(url, [texts[i:i + 4] for i in range(0, len(texts), 4)], workers=8)
            info = httpx.get(f"{url}/v1/info").json()
        assert info["runtime"] == "torch" and len(info["models"]) == len(models)
        decided = clf.predict(texts)
        if clf.task.name == "regression":
            assert np.allclose([p["label"] for p in predictions], decided, atol=1e-5)
            assert "probabilities" not in predictions[0]
        else:
            assert [tuple(p["label"]) if isinstance(p["label"], list) else p["label"] for p in predictions] == decided
            got = np.array([[p["probabilities"][lbl] for lbl in clf.labels] for p in predictions])
            assert np.allclose(got, clf.predict_proba(texts), atol=1e-5)


def test_explain_true_answers_each_texts_token_scores(served):
    """On an ONNX bundle (its PyTorch weights explain), as `inference.explain.explain`; in a Python without
    torch and Captum, a 400 that says so, while predictions go on."""
    from ulmfit_cli import load_classifier
    from ulmfit_cli.inference.explain import explain
    texts = served["texts"][:3]
    expected = explain(load_classifier(served["bundle"]), texts)
    with server("--model", served["bundle"]) as (url, _):
        assert httpx.get(f"{url}/v1/info").json()["explain"] is True
        r = _predict(url, {"texts": texts, "explain": True})
        assert r.status_code == 200, r.text
        for p, e in zip(r.json()["predictions"], expected):
            ex = p["explanation"]
            assert ex["tokens"] == e.tokens and ex["targets"] == [p["label"]] and ex["method"] == "ig"
            assert np.allclose(ex["scores"], e.scores, atol=1e-5)
        assert "explanation" not in _predict(url, {"texts": texts}).json()["predictions"][0]
        r = _predict(url, {"text": texts[0], "explain": True, "explain_method": "lime"})
        assert r.status_code == 422 and "explain_method" in r.json()["error"]
    with server("--model", served["bundle"], ulmfit=(sys.executable, "-c", NO_TORCH)) as (url, _):
        assert httpx.get(f"{url}/v1/info").json()["explain"] is False
        r = _predict(url, {"text": texts[0], "explain": True})
        assert r.status_code == 400 and "PyTorch and Captum" in r.json()["error"]
        assert _predict(url, {"text": texts[0]}).status_code == 200


@needs_chromium
def test_the_page_classifies_a_text_in_headless_chromium(served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ulmfit_cli import load_classifier
    text = served["texts"][0]
    expected = load_classifier(served["bundle"]).predict([text])[0]
    with server("--model", served["bundle"]) as (url, _), headless() as driver:
        driver.get(url + "/")
        driver.find_element(By.ID, "text").send_keys(text)
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "label").text.strip())
        assert driver.find_element(By.ID, "label").text.strip() == expected
        assert len(driver.find_elements(By.CSS_SELECTOR, "#probs tr")) == 2  # a bar per class
        assert not driver.find_elements(By.CSS_SELECTOR, "#words span")  # explain unticked: no words
        driver.find_element(By.ID, "explain").click()  # tick "show the words", classify again
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#words span"))
        words = [w.text for w in driver.find_elements(By.CSS_SELECTOR, "#words span")]
        assert words == load_classifier(served["bundle"]).tokens([text])[0][1:]  # all but xxbos, in order
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
        shot = tmp_path / "serve-page.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 1000
