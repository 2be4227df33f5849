"""`ulmfit serve` under load, on 127.0.0.1 only: the same server with micro-batching on and off, beside
`ulmfit predict` on the same texts, in one run.

Each run starts `ulmfit serve` as a subprocess on a free loopback port, waits for /health/ready, then sends a
bounded load: `--clients` concurrent keep-alive connections (asyncio streams: `Connection`), each sending `--requests` requests of 1-8 texts drawn
from TREC-6's test questions (stopping early after `--seconds`). It reports requests/s, texts/s, p50/p99
latency, the mean model batch (from /metrics) and the errors; then one request on the idle server against
the model's own single-text time in this process.

  python bench/serve_load.py --model BUNDLE_OR_RUN [--clients 32] [--requests 100]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ulmfit_cli", "serve", "--model", str(model), "--port", str(port),
                             "--threads", "1", *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=ROOT)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready in 120 s")


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -9


class Connection:
    """One keep-alive HTTP/1.1 connection to the server, POSTing JSON: a few lines of asyncio streams instead
    of httpx, whose per-request CPU (1-2 ms) on the 2-core machine that also runs the server would make the
    load generator, not the server, what the benchmark measures."""

    def __init__(self, url: str):
        self.host, self.port = url.split("//")[1].split(":")
        self.reader = self.writer = None

    async def post(self, path: str, payload) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, int(self.port))
        body = json.dumps(payload).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def load(url: str, texts: list[str], clients: int, requests: int, seconds: float, seed: int = 0):
    """`clients` concurrent clients, `requests` each (fewer if `seconds` run out): latencies, texts, errors."""
    rng = random.Random(seed)
    plans = [[rng.sample(texts, rng.randint(1, 8)) for _ in range(requests)] for _ in range(clients)]
    latencies, sent, errors = [], 0, 0
    deadline = time.monotonic() + seconds

    async def one(plan):
        nonlocal sent, errors
        conn = Connection(url)
        try:
            for batch in plan:
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                status, _ = await conn.post("/v1/predict", {"texts": batch})
                latencies.append(time.perf_counter() - t0)
                sent += len(batch)
                errors += status != 200
        finally:
            await conn.close()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(p) for p in plans))
    return np.array(latencies), sent, errors, time.perf_counter() - t0


def mean_batch(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    count = float(text.split("ulmfit_batch_texts_count ")[1].split()[0])
    total = float(text.split("ulmfit_batch_texts_sum ")[1].split()[0])
    return total / count


def idle_single(url: str, texts: list[str], n: int = 100) -> float:
    async def run():
        conn, out = Connection(url), []
        for t in texts[:n]:
            t0 = time.perf_counter()
            status, _ = await conn.post("/v1/predict", {"text": t})
            assert status == 200
            out.append(time.perf_counter() - t0)
        await conn.close()
        return out
    return float(np.median(asyncio.run(run())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="a bundle (ONNX or not) or train-clf run dir")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=100, help="requests per client")
    ap.add_argument("--seconds", type=float, default=120, help="stop sending after this long")
    args = ap.parse_args()
    texts = pd.read_csv(ROOT / "data" / "trec6" / "test.csv")["text"].astype(str).tolist()
    print(f"model {args.model}; {args.clients} clients x {args.requests} requests of 1-8 TREC-6 questions; "
          f"server with one model thread, on 127.0.0.1\n")
    print("| server | requests/s | texts/s | p50 ms | p99 ms | p99/p50 | mean batch (texts) | errors | exit |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    results = {}
    for label, flags in (("micro-batching on", ()), ("micro-batching off", ("--no-batching",))):
        proc, url = start(args.model, *flags)
        try:
            lat, sent, errors, wall = asyncio.run(load(url, texts, args.clients, args.requests, args.seconds))
            batch = mean_batch(url)
        finally:
            code = stop(proc)
        p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
        results[label] = sent / wall
        print(f"| {label} | {len(lat) / wall:,.0f} | {sent / wall:,.0f} | {p50 * 1e3:.1f} | {p99 * 1e3:.1f} | "
              f"{p99 / p50:.1f} | {batch:.1f} | {errors} | {code} |")
    print(f"\nthroughput, on / off: {results['micro-batching on'] / results['micro-batching off']:.1f}x")

    from ulmfit_cli import load_classifier
    clf = load_classifier(args.model, threads=1)
    clf.predict_proba(texts[:5])
    own = []
    for t in texts[:100]:
        t0 = time.perf_counter()
        clf.predict_proba([t])
        own.append(time.perf_counter() - t0)
    proc, url = start(args.model)
    try:
        served = idle_single(url, texts)
    finally:
        stop(proc)
    print(f"one request on the idle server: p50 {served * 1e3:.2f} ms; the model's own single text in this "
          f"process: {np.median(own) * 1e3:.2f} ms ({served / np.median(own):.1f}x)")
    file = Path(f"/tmp/serve-load-{time.time_ns()}.txt")
    file.write_text("\n".join(texts))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ulmfit_cli", "predict", "--model", str(args.model), "--input", str(file),
                    "--output", "-", "--threads", "1"], check=True, capture_output=True, cwd=ROOT, timeout=600)
    wall = time.perf_counter() - t0
    file.unlink()
    print(f"`ulmfit predict` on the {len(texts)} questions (a fresh process, load included): {wall:.2f} s, "
          f"{len(texts) / wall:,.0f} texts/s")


if __name__ == "__main__":
    main()
