"""Dump -> numericalized tokens: the stock fastai path against `ulmfit prepare`, in one run.

The dump is the Wikipedia sample (gensim's copy, or ../shared/data) with its pages repeated
`--copies` times under renamed titles (10 copies: about 60 MB of XML), written as Wikimedia
publishes it: `pages-articles-multistream.xml.bz2` (bz2 streams of 100 pages) and its
`multistream-index.txt.bz2` (`--layout single`: one bz2 stream, as the sample is). Both paths use
the same number of worker processes:

- stock fastai: wikiextractor 3.1 (`--no-templates --json`, as a tutorial runs it) -> a
  DataFrame -> `tokenize_df` (spaCy + fastai's rules) -> fastai's `Numericalize` into a list
  of tensors, which is what `TextBlock` holds in memory;
- ulmfit: `ulmfit prepare` (streaming extraction, tokenization and numericalization into an
  on-disk token store).

Each path runs in its own process tree, sampled every 0.25 s: peak RSS summed over the tree
(counts pages shared by forked workers once per process), peak PSS (shares them out: the
memory really used) and the largest single process RSS.
`ulmfit prepare` runs once more per `--scaling` worker count, to show how reading scales, beside this
machine's own ceiling: pure CPU work, and prepare's own work in independent processes, in N processes
against 1.
With `--repeat N` every path runs N times, the paths alternating, and the table shows each one's
fastest run: on a shared machine whose speed drifts (the 2-core one drifts by a third within
minutes), one slow spell then cannot decide a ratio.
  python bench/prepare_speed.py [--copies 10] [--workers 2] [--skip-stock] [--layout multistream|single]
                                [--scaling 1,2] [--repeat 1]
"""
from __future__ import annotations

import argparse
import bz2
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sample_dump() -> Path:
    shared = ROOT.parent / "shared" / "data" / "wiki" / "enwiki-pages-articles-sample.xml.bz2"
    if shared.is_file():
        return shared
    import gensim
    return (Path(gensim.__file__).parent / "test" / "test_data"
            / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")


def make_dump(out: Path, copies: int, layout: str = "single") -> int:
    """The sample's pages `copies` times, titles renamed, as one bz2 stream or Wikimedia's multistream
    layout (with its index); returns the XML size in bytes."""
    xml = bz2.decompress(sample_dump().read_bytes()).decode("utf-8")
    head, rest = xml.split("<page>", 1)
    body, tail = ("<page>" + rest).rsplit("</page>", 1)
    body += "</page>"
    parts = [head]
    for c in range(copies):
        parts.append(re.sub(r"<title>(.*?)</title>", lambda m: f"<title>{m.group(1)} (copy {c})</title>", body)
                     if c else body)
    parts.append(tail)
    data = "".join(parts).encode("utf-8")
    if layout == "multistream":
        from ulmfit_cli.corpus.wikidump import to_multistream
        to_multistream(data, out)
    else:
        out.write_bytes(bz2.compress(data, 9))
    return len(data)


def _tree_mem(pid: int) -> tuple[int, int, int]:
    """(RSS summed, PSS summed, largest single-process RSS) in bytes over `pid` and its descendants.

    RSS counts the shared pages of forked workers (torch's libraries, say) once per process;
    PSS splits them between the processes that share them: the memory the tree really uses.
    """
    rss = pss = top = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for ln in f:
                    if ln.startswith("Rss:"):
                        rss += int(ln.split()[1]) * 1024
                        top = max(top, int(ln.split()[1]) * 1024)
                    elif ln.startswith("Pss:"):
                        pss += int(ln.split()[1]) * 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return rss, pss, top


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, tuple[int, int, int], str]:
    """(seconds, peaks of `_tree_mem`, stdout) of a command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = (0, 0, 0)
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = tuple(map(max, peak, _tree_mem(proc.pid)))
            time.sleep(0.25)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    stop.set()
    th.join()
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[:4])} failed:\n{err[-3000:]}")
    return seconds, peak, out


SPIN = """import time
t0 = time.perf_counter()
s = 0
for i in range(20_000_000): s += i
print(time.perf_counter() - t0)
"""  # pure Python CPU work, nothing shared

WORK = r"""
import sys, time
from pathlib import Path
from ulmfit_cli.corpus import prepare, text, wikidump
text.init_worker(None, "en")
jobs = [j for j in wikidump.chunks(Path(sys.argv[1]), wikidump.DumpStats())
        if not isinstance(j, wikidump.BrokenChunk)]
t0 = time.perf_counter()
for job in jobs[:int(sys.argv[2])]:
    prepare._work("dump", job, 0)
print(time.perf_counter() - t0)
"""  # the dump's first pieces read, cleaned and tokenized as a worker does (its own memo, nothing shared)


def scaling(workers: int, code: str, *args: str) -> float:
    """How much more of the work `code` does (it prints its own seconds, start-up left out) `workers`
    independent processes get done at once than one alone, on this machine: 2.0 for 2 free cores, less
    where its host is busy. With SPIN, pure CPU work; with WORK, `prepare`'s own, memory-bound work, which
    shares caches that pure CPU work does not: the ceilings of any scaling measured here."""
    def slowest(n: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
                 for _ in range(n)]
        outs = [proc.communicate()[0] for proc in procs]
        if any(proc.returncode for proc in procs):
            sys.exit("a ceiling's process failed")
        return max(float(out) for out in outs)
    return workers * slowest(1) / slowest(workers)


STOCK = r'''
import json, sys, glob, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd
from fastai.text.all import tokenize_df, Numericalize
out_dir, workers = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
rows = [json.loads(ln) for f in sorted(glob.glob(out_dir + "/*/wiki_*")) for ln in open(f, encoding="utf-8")]
df = pd.DataFrame({"text": [r["text"] for r in rows if r["text"].strip()]})
tok_df, count = tokenize_df(df, "text", n_workers=workers)
num = Numericalize(min_freq=3, max_vocab=60000)
num.setup(tok_df["text"])
ids = [num(t) for t in tok_df["text"]]
print(json.dumps({"docs": len(ids), "tokens": int(sum(len(t) for t in ids)), "vocab": len(num.vocab),
                  "tokenize_seconds": time.perf_counter() - t0}))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--skip-stock", action="store_true", help="measure ulmfit prepare only")
    ap.add_argument("--layout", choices=("multistream", "single"), default="multistream")
    ap.add_argument("--scaling", default="1,2", help="worker counts for the scaling rows ('' for none)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each path, alternating; the fastest is shown")
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dump = tmp / ("enwiki-bench-pages-articles" + ("-multistream" if args.layout == "multistream" else "")
                      + ".xml.bz2")
        xml_bytes = make_dump(dump, args.copies, args.layout)
        mb = xml_bytes / 1e6
        print(f"dump: {args.copies} copies of the sample, {mb:.1f} MB of XML ({dump.stat().st_size / 1e6:.1f} MB bz2, "
              f"{args.layout}), {args.workers} workers, {os.cpu_count()} cores")
        runs: dict[str, list[dict]] = {}  # path -> a row per repeat
        counts = [args.workers] + [int(w) for w in args.scaling.split(",") if w and int(w) != args.workers]
        ceiling, work_ceiling = [], []
        for r in range(args.repeat):  # the paths alternate: a slow spell of a shared machine hits them all
            ceiling.append(scaling(max(counts), SPIN))
            work_ceiling.append(scaling(max(counts), WORK, str(dump), "6"))
            if not args.skip_stock:
                shutil.rmtree(tmp / "wx", ignore_errors=True)
                ext_s, ext_rss, _ = run_measured([py, "-m", "wikiextractor.WikiExtractor", str(dump), "--no-templates",
                                                  "--json", "--processes", str(args.workers), "-q", "-o",
                                                  str(tmp / "wx")])
                tok_s, tok_rss, out = run_measured([py, "-c", STOCK, str(tmp / "wx"), str(args.workers)])
                stock = json.loads(out.strip().splitlines()[-1])
                runs.setdefault("stock fastai (wikiextractor + tokenize_df + Numericalize)", []).append(
                    {"workers": None, "seconds": ext_s + tok_s, "build": None, "cpu": None,
                     "mem": tuple(map(max, ext_rss, tok_rss)), "tokens": stock["tokens"], "docs": stock["docs"]})
                print(f"  run {r + 1}, stock: wikiextractor {ext_s:.1f} s, tokenize_df + Numericalize {tok_s:.1f} s")
            for w in counts:
                cache = tmp / f"cache-{w}-{r}"
                env = {**os.environ, "CI": "true", "ULMFIT_CACHE": str(cache)}
                sec, rss, _ = run_measured([py, "-m", "ulmfit_cli", "prepare", "--set", f"data.source={dump}",
                                            "--set", f"data.workers={w}"], env=env)
                stats = json.loads(next(cache.glob("*/stats.json")).read_text())
                name = f"ulmfit prepare, {w} worker{'s' if w > 1 else ''}"
                runs.setdefault(name, []).append(
                    {"workers": w, "seconds": sec, "build": stats["seconds"],
                     "cpu": (stats["parent_cpu_seconds"], stats["workers_cpu_seconds"]), "mem": rss,
                     "tokens": stats["train_tokens"] + stats["valid_tokens"],
                     "docs": stats["train_docs"] + stats["valid_docs"]})
                print(f"  run {r + 1}, {name}: {sec:.1f} s")
        # each path's fastest run, with the largest memory peaks of any of its runs
        rows = {name: {**min(rs, key=lambda row: row["seconds"]),
                       "mem": tuple(max(m) for m in zip(*(row["mem"] for row in rs)))} for name, rs in runs.items()}
        same = len({b"".join((next((tmp / f"cache-{w}-0").glob("*")) / f).read_bytes()
                             for f in ("train.bin", "valid.bin", "vocab.json")) for w in counts}) == 1
    print()
    print("| path | seconds | MB of XML/s | tokens/s | the store's build alone, s (MB/s) | its CPU s: parent / "
          "workers | peak RSS, sum over processes | peak PSS | peak RSS, largest process | documents | tokens |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    gb = 2 ** 30
    for name, row in rows.items():
        s, t, (r, p, top) = row["seconds"], row["tokens"], row["mem"]
        build = f"{row['build']:.1f} ({mb / row['build']:.2f})" if row["build"] else "-"
        cpu = f"{row['cpu'][0]:.1f} / {row['cpu'][1]:.1f}" if row["cpu"] else "-"
        print(f"| {name} | {s:.1f} | {mb / s:.2f} | {t / s:,.0f} | {build} | {cpu} | {r / gb:.2f} GB | "
              f"{p / gb:.2f} GB | {top / gb:.2f} GB | {row['docs']:,} | {t:,} |")
    by = {row["workers"]: row for row in rows.values() if row["workers"]}  # ulmfit's, by worker count
    if not args.skip_stock:
        stock, ours = next(row for row in rows.values() if not row["workers"]), by[args.workers]
        print(f"\nspeed-up of ulmfit prepare ({args.workers} workers) over stock fastai: "
              f"{stock['seconds'] / ours['seconds']:.2f}x; peak PSS ratio {ours['mem'][1] / stock['mem'][1]:.2f}")
    for what, key in (("the whole command", "seconds"),
                      ("the store's build alone (without the command's start-up)", "build")):
        if 1 in by:
            print(f"scaling, {what}: " + "; ".join(
                f"{w} workers {mb / row[key]:.2f} MB of XML/s ({by[1][key] / row[key]:.2f}x 1 worker)"
                for w, row in sorted(by.items())))
    print(f"this machine's own scaling, pure CPU work in {max(counts)} processes against 1: "
          + ", ".join(f"{c:.2f}x" for c in ceiling) + " (one per run): the ceiling of the figures above")
    print(f"this machine's scaling for prepare's own work (read, clean, tokenize) in {max(counts)} independent "
          f"processes against 1: " + ", ".join(f"{c:.2f}x" for c in work_ceiling) + " (one per run)")
    print("the parent process's CPU (scheduling, counting, writing) against the build's wall time: " + "; ".join(
        f"{w} worker(s): {row['cpu'][0]:.1f} s of {row['build']:.1f} s" for w, row in sorted(by.items())))
    print(f"every worker count wrote the same train tokens: {same}")


if __name__ == "__main__":
    main()
