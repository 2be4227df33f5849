"""`ulmfit serve`: a classifier behind HTTP (FastAPI on uvicorn), with micro-batching, limits, health, metrics
and a page to try it.

- `POST /v1/predict` `{"texts": [...]}` or `{"text": "..."}` (and `top_k`): per text the label (multi-label:
  the label set; regression: the number), the probabilities per class, the model id. Concurrent requests are
  merged into one model batch (`Batcher`) up to `max_batch_tokens` tokens or `max_wait_ms`, whichever comes
  first; each request gets its own rows back. `"explain": true` adds each text's token scores
  (`inference.explain`, in a thread of its own; where PyTorch or Captum is missing: 400).
- `GET /health/live`, `GET /health/ready` (ready once the model has answered a warm-up batch), `GET /v1/info`
  (task, labels, thresholds, card, sha256, runtime, precision), `GET /metrics` (prometheus-client), `/docs`
  (FastAPI's OpenAPI page) and `/` (a page to try the model).
- Every bad request gets a JSON `{"error": ...}`: 422 for bad JSON or a wrong shape (FastAPI's validation),
  400 for a body that is not UTF-8, 413 for a body, a text count or a text over the limits, 503 with
  Retry-After when the queue is full, 401 for a missing or wrong key (`api_key`, compared in constant time).

The model runs in one worker thread, so the event loop keeps answering while it computes; ONNX bundles run on
onnxruntime and the server then never imports torch (`ulmfit_cli.load_classifier`). One process loads the
model once; `ulmfit serve --workers N` runs N of them (uvicorn's `app_from_env` factory).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import html
import importlib.util
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ulmfit_cli.classify.pairs import members as pair_members
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import read_json, sha256
from ulmfit_cli.inference.predict import explanations
from ulmfit_cli.layout import CARD, CLASSIFIER, ONNX_MODEL, __version__

SETTINGS_ENV = "ULMFIT_SERVE_SETTINGS"  # the settings of `--workers` processes, as JSON


@dataclass
class ServeSettings:
    models: list[str]
    max_batch_tokens: int = 8_192  # a model batch holds at most this many tokens...
    max_wait_ms: float = 0.0       # ... and waits at most this long for more (0: takes what queued meanwhile)
    batching: bool = True          # off: every request is its own batch
    max_queue: int = 256           # requests waiting or running; more get 503
    max_texts: int = 64            # texts per request
    max_chars: int = 10_000        # characters per text
    api_key: str | None = field(default=None, repr=False)
    threads: int | None = None
    runtime: str = "auto"

    @property
    def max_body(self) -> int:
        """Bytes a request body may have: every text at its longest, JSON-escaped, and some room."""
        return self.max_texts * (self.max_chars * 6 + 16) + 4096


class PredictRequest(BaseModel):
    """One text (`text`) or several (`texts`)."""
    model_config = ConfigDict(extra="forbid")
    texts: list[str] | None = Field(None, description="the texts to classify")
    text: str | None = Field(None, description="one text to classify (instead of texts)")
    top_k: int | None = Field(None, ge=1, description="only the k likeliest classes' probabilities")
    explain: bool = Field(False, description="each text's tokens and their attribution scores (slower)")
    explain_method: Literal["ig", "grad_input", "intrinsic"] = Field(
        "ig", description="ig: Integrated Gradients; grad_input: gradient x input, one backward pass; "
                          "intrinsic: fastai v1's unsigned |gradient|")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.texts is None) == (self.text is None):
            raise ValueError("give either 'texts' (a list of strings) or 'text' (a string)")
        if self.texts is not None and not self.texts:
            raise ValueError("'texts' is empty")
        return self

    def all_texts(self) -> list[str]:
        return self.texts if self.texts is not None else [self.text]


class QueueFull(Exception):
    pass


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("ulmfit_requests", "HTTP requests by path and status", ["path", "status"],
                                registry=self.registry)
        self.latency = Histogram("ulmfit_request_seconds", "request latency", ["path"],
                                 registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch = Histogram("ulmfit_batch_texts", "texts per model batch", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
        self.queue = Gauge("ulmfit_queue_depth", "requests waiting for or in a model batch",
                           registry=self.registry)


class Batcher:
    """Merges concurrent requests into model batches: the first request waiting starts a batch, which takes
    the requests queued behind it until it holds `max_batch_tokens` tokens or `max_wait_ms` has passed; the
    model runs it in the one worker thread, and each request's rows go back to it. With `max_wait_ms` 0 (the
    default) a batch waits for nothing: it takes the requests that queued while the model ran the last one,
    so an idle server answers at once and a busy one batches as much as its load brings."""

    def __init__(self, clf, settings: ServeSettings, metrics: Metrics):
        self.clf, self.settings, self.metrics = clf, settings, metrics
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pending = 0
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="ulmfit-model")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> np.ndarray:
        if self.pending >= self.settings.max_queue:
            raise QueueFull
        self.pending += 1
        self.metrics.queue.set(self.pending)
        try:
            ids = self.clf.token_ids(texts, workers=0)
            future = asyncio.get_running_loop().create_future()
            await self.queue.put((texts, ids, future))
            return await future
        finally:
            self.pending -= 1
            self.metrics.queue.set(self.pending)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            tokens = sum(map(len, items[0][1]))
            deadline = loop.time() + self.settings.max_wait_ms / 1000
            while self.settings.batching and tokens < self.settings.max_batch_tokens:
                try:
                    item = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self.queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                items.append(item)
                tokens += sum(map(len, item[1]))
            texts = [t for it in items for t in it[0]]
            ids = [i for it in items for i in it[1]]
            self.metrics.batch.observe(len(texts))
            try:
                out = await loop.run_in_executor(self.executor, self.clf.outputs_of, texts, ids)
            except Exception as e:  # the model failed on this batch: each request hears it
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            start = 0
            for rows, _, future in items:
                if not future.done():  # a client that went away cancelled its future
                    future.set_result(out[start:start + len(rows)])
                start += len(rows)


def load_model(settings: ServeSettings):
    """The classifier (or ensemble) and its description for /v1/info: ONNX bundles on onnxruntime."""
    from ulmfit_cli import load_classifier  # the package's loader: an ONNX bundle never imports torch
    clf = load_classifier(*settings.models, device="cpu", threads=settings.threads, runtime=settings.runtime)
    members = [m for p in settings.models for m in (pair_members(p) or [Path(p)])]
    first = clf.members[0] if hasattr(clf, "members") else clf
    digests = [sha256(m / (ONNX_MODEL if first.runtime == "onnx" else CLASSIFIER)) for m in members]
    # one model: its weights' sha256 (the card's); an ensemble: that of its members' digests
    digest = digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
    cards = [read_json(m / CARD, "--model") for m in members if (m / CARD).is_file()]
    info = {"task": clf.task.name, "labels": clf.labels,
            "thresholds": (None if clf.thresholds is None
                           else dict(zip(clf.labels, map(float, clf.thresholds)))),
            "models": [str(m) for m in members], "sha256": digest, "version": __version__,
            "runtime": first.runtime, "precision": first.precision, "explain": _can_explain(),
            "card": cards[0] if len(cards) == 1 else cards}
    info["model_id"] = f"{Path(settings.models[0]).name}@{info['sha256'][:12]}"
    return clf, info


def _can_explain() -> bool:
    """Whether this Python has what explanations need: PyTorch and Captum (a runtime venv has neither)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("torch", "captum"))
    except (ImportError, ValueError):  # a finder that refuses the module
        return False


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyLimit:
    """Pure ASGI: reads a POST body whole, answers 413 over `max_body` bytes and 400 when it is not UTF-8,
    before FastAPI parses it (FastAPI would answer a non-UTF-8 body with a vague 400)."""

    def __init__(self, app, max_body: int):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return await _error(413, f"the body has {int(declared):,} bytes; at most {self.max_body:,} "
                                     f"(--max-texts x --max-chars)")(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                return await _error(413, f"the body is over {self.max_body:,} bytes (--max-texts x "
                                         f"--max-chars)")(scope, receive, send)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as e:
            return await _error(400, f"the body is not UTF-8 (byte {e.start}); send JSON encoded as UTF-8")(
                scope, receive, send)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replay, send)


class Counted:
    """Pure ASGI (Starlette's BaseHTTPMiddleware costs more than the model on a short text): each response's
    status and latency into the metrics, by path."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
            self.metrics.requests.labels(path, str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - t0)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ulmfit: __NAME__</title><link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:760px;margin:2em auto;padding:0 1em;color:#222}
textarea{width:100%;height:6em;font-size:1em}button{font-size:1em;padding:.4em 1.2em;margin:.5em .5em 0 0}
.bar{height:1.2em;background:#4a7fc1;display:inline-block;vertical-align:middle}
td{padding:.15em .5em}#label{font-size:1.6em;font-weight:bold}.ex{cursor:pointer;color:#2a5db0}
.muted{color:#777;font-size:.9em}#error{color:#b00}
#words span{padding:.1em .15em;margin:0 .05em;border-radius:3px;line-height:2}
#words .sp{color:#555;font-size:.75em}
</style></head><body>
<h1>__NAME__</h1><p class="muted">__TASK__ over __LABELS__</p>
<p __KEYHIDE__>API key <input id="key" type="password" size="30"></p>
<textarea id="text" placeholder="Type a text to classify"></textarea><br>
<button id="go">Classify</button><label __EXPLAINHIDE__><input type="checkbox" id="explain"> show the words
that drove it</label> <span class="muted">examples: __EXAMPLES__</span>
<p>prediction: <span id="label"></span></p><p id="error"></p><table id="probs"></table>
<p id="words"></p><p class="muted" id="wordnote"></p>
<script>
async function classify(){
  const text=document.getElementById('text').value, key=document.getElementById('key').value;
  const headers={'Content-Type':'application/json'}; if(key){headers['Authorization']='Bearer '+key;}
  const explain=document.getElementById('explain').checked;
  const body=JSON.stringify({text:text,explain:explain});
  const r=await fetch('v1/predict',{method:'POST',headers:headers,body:body});
  const j=await r.json(); const err=document.getElementById('error'), tbl=document.getElementById('probs');
  tbl.innerHTML=''; document.getElementById('words').innerHTML='';
  document.getElementById('wordnote').textContent='';
  if(!r.ok){err.textContent=j.error; document.getElementById('label').textContent=''; return;}
  err.textContent=''; const p=j.predictions[0]; const lbl=p.label;
  document.getElementById('label').textContent=Array.isArray(lbl)?(lbl.join(', ')||'(none)'):lbl;
  for(const [k,v] of Object.entries(p.probabilities||{})){
    const tr=tbl.insertRow(); tr.insertCell().textContent=k;
    tr.insertCell().innerHTML=
      '<span class="bar" style="width:'+Math.round(v*300)+'px"></span> '+v.toFixed(3);}
  if(p.explanation){highlight(p.explanation);}
}
function highlight(ex){  // green: for the first explained class, red: against; xx...: fastai markers
  const s=ex.scores[0], top=Math.max(...s.map(Math.abs),1e-12), words=document.getElementById('words');
  ex.tokens.forEach((t,i)=>{if(t==='xxbos')return;
    const w=document.createElement('span'), a=Math.abs(s[i])/top;
    w.textContent=t; w.title=s[i].toFixed(4); if(t.startsWith('xx'))w.className='sp';
    w.style.background=s[i]>=0?'rgba(40,160,80,'+a+')':'rgba(210,50,50,'+a+')'; words.appendChild(w);});
  document.getElementById('wordnote').textContent='words for '+ex.targets[0]+' ('+ex.method+')'+
    (ex.notes.length?': '+ex.notes.join('; '):'');
}
document.getElementById('go').onclick=classify;
for(const e of document.querySelectorAll('.ex')){e.onclick=()=>{
  document.getElementById('text').value=e.dataset.text; classify();};}
</script></body></html>"""


def _page(info: dict, examples: list[str], keyed: bool) -> str:
    links = " ".join(f'<span class="ex" data-text="{html.escape(t)}">[{i + 1}]</span>'
                     for i, t in enumerate(examples)) or "(none in the model card)"
    return (PAGE.replace("__NAME__", html.escape(info["model_id"]))
            .replace("__TASK__", html.escape(info["task"]))
            .replace("__LABELS__", html.escape(", ".join(info["labels"])))
            .replace("__KEYHIDE__", "" if keyed else "hidden").replace("__EXAMPLES__", links)
            .replace("__EXPLAINHIDE__", "" if info["explain"] else "hidden"))


def _examples(info: dict) -> list[str]:
    cards = info["card"] if isinstance(info["card"], list) else [info["card"]]
    return [t for c in cards if isinstance(c, dict)
            for t in c.get("examples") or [] if isinstance(t, str)][:5]


def create_app(settings: ServeSettings, loaded=None) -> FastAPI:
    """The app for `settings`; `loaded`: the (classifier, info) `load_model` gave, else loaded here."""
    clf, info = loaded or load_model(settings)
    metrics, state = Metrics(), {"ready": False}
    batcher = Batcher(clf, settings, metrics)
    explainer = ThreadPoolExecutor(1, thread_name_prefix="explain")  # one explanation at a time
    page = _page(info, _examples(info), settings.api_key is not None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        await batcher.submit([info["labels"][0] if info["task"] != "regression" else "warm-up"])  # warm-up
        state["ready"] = True
        yield
        state["ready"] = False
        await batcher.stop()
        explainer.shutdown(wait=True)

    app = FastAPI(title="ulmfit serve", version=__version__, lifespan=lifespan,
                  description=f"The classifier {info['model_id']} "
                              f"({info['task']}: {', '.join(info['labels'])})")

    app.add_middleware(BodyLimit, max_body=settings.max_body)

    app.add_middleware(Counted, metrics=metrics)  # added last, so outermost: BodyLimit's 400s and 413s count

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "the body"
            parts.append(f"{where}: {err.get('msg')}")
        return _error(422, "; ".join(parts) or "the request does not match the schema (see /docs)")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    def authorized(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise HTTPException(401, "a valid API key is needed: 'Authorization: Bearer KEY' or "
                                     "'X-API-Key: KEY'",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.post("/v1/predict", dependencies=[Depends(authorized)])
    async def predict(body: PredictRequest):
        """The label and class probabilities of each text, in the order given."""
        texts = body.all_texts()
        if len(texts) > settings.max_texts:
            raise HTTPException(413, f"{len(texts)} texts; at most {settings.max_texts} per request "
                                     f"(--max-texts)")
        long = next((i for i, t in enumerate(texts) if len(t) > settings.max_chars), None)
        if long is not None:
            raise HTTPException(413, f"text {long} has {len(texts[long]):,} characters; at most "
                                     f"{settings.max_chars:,} (--max-chars)")
        if not state["ready"]:
            raise HTTPException(503, "the model is loading", headers={"Retry-After": "1"})
        try:
            outputs = await batcher.submit(texts)
        except QueueFull:
            raise HTTPException(503, f"{settings.max_queue} requests are queued (--max-queue); retry later",
                                headers={"Retry-After": "1"}) from None
        found = await explained(texts, body.explain_method) if body.explain else None
        decided = clf.task.decide(outputs, clf.labels, clf.thresholds)
        out = []
        for i, (row, label) in enumerate(zip(outputs, decided)):
            item = {"label": list(label) if isinstance(label, tuple) else label, "model": info["model_id"]}
            if clf.task.probability_columns():
                order = np.argsort(-row)[:body.top_k] if body.top_k else range(len(row))
                item["probabilities"] = {clf.labels[j]: float(row[j]) for j in order}
            if found is not None:
                item["explanation"] = found[i].as_dict()
            out.append(item)
        return JSONResponse({"predictions": out})

    async def explained(texts: list[str], method: str) -> list:
        """The texts' explanations, computed one request at a time beside the batcher's model thread."""
        if not info["explain"]:
            raise HTTPException(400, "explanations need PyTorch and Captum, which this server's Python lacks "
                                     "(pip install 'ulmfit-cli[explain]' in the full install)")
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(explainer, partial(explanations, clf, texts, method=method))
        except UlmfitError as e:
            raise HTTPException(400, str(e)) from None

    @app.get("/v1/info", dependencies=[Depends(authorized)])
    async def model_info():
        """The model: task, labels, thresholds, card, sha256, version, runtime, precision."""
        return info

    @app.get("/health/live")
    async def live():
        return {"status": "live"}

    @app.get("/health/ready")
    async def ready():
        if not state["ready"]:
            return _error(503, "not ready: the model has not answered its warm-up batch yet",
                          {"Retry-After": "1"})
        return {"status": "ready", "model": info["model_id"]}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home():
        return page

    return app


KNOWN_PATHS = {"/v1/predict", "/v1/info", "/health/live", "/health/ready", "/metrics", "/", "/docs",
               "/openapi.json"}


def app_from_env() -> FastAPI:
    """The app of `ulmfit serve --workers N`'s processes (uvicorn's factory), from `SETTINGS_ENV`."""
    return create_app(ServeSettings(**json.loads(os.environ[SETTINGS_ENV])))


def read_key(path: Path | None) -> str | None:
    """The API key in `path` (its first line), never one given on the command line."""
    if path is None:
        return None
    try:
        key = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UlmfitError(f"--api-key-file: cannot read {path} ({e})") from None
    if not key or len(key[0].strip()) < 16:
        raise UlmfitError(f"--api-key-file: {path} should hold a key of at least 16 characters on its first "
                          f"line")
    return key[0].strip()


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the server until SIGTERM or Ctrl-C (uvicorn finishes the requests in flight, then exits 0)."""
    import uvicorn
    if workers > 1:
        load_model(settings)  # a bad --model is said here, once, not by every worker
        os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
        uvicorn.run("ulmfit_cli.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                    timeout_graceful_shutdown=30, log_level="info")
        return
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=30, log_level="info")
