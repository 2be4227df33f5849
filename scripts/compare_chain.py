"""Behaviour check for refactors: run a tiny chain of CLI commands in a checkout, then diff two such outputs.

The chain: pretrain -> finetune-lm -> train-clf (single-label); a pretrain and a train-clf run SIGKILLed
mid-run, then resumed; a backward pretrain; generate; predict; then a multi-label (0/1 columns) and a
regression train-clf with their predict and evaluate; a `--directions both` pair (finetune-lm from the
forward and backward pretrain runs, train-clf from that pair, predict with the pair); a 2-trial `tune`;
an `evaluate` of the single-label classifier, with the baseline; a train-clf that `train.patience` stops
early; and a finetune-lm on fastText lines.

    python scripts/compare_chain.py data /tmp/chain-data                  # the inputs, once
    git worktree add /tmp/base <commit>
    python scripts/compare_chain.py run --repo /tmp/base --data /tmp/chain-data --out /tmp/chain-base
    python scripts/compare_chain.py run --repo .         --data /tmp/chain-data --out /tmp/chain-new
    python scripts/compare_chain.py diff /tmp/chain-base /tmp/chain-new   # exit 0: bit-identical

`diff` compares weights and metrics.jsonl of every run, results.json, predictions, evaluate's report.json
and arrays, tune's trials.csv and best.yaml. Wall-clock figures are left out, and each output folder's own
path is written <out> (it is in paths the outputs record). A figure only one side writes is a note, not a
failure. Only the command line is used (it is what both commits share). Each checkout runs with its own
code (PYTHONPATH, working directory); the same Python serves both.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parents[1]
VOLATILE = {"seconds", "tokens_per_s"}  # wall-clock figures
STAGES = "train.stages=[{freeze_to: -1, epochs: 2, lr: 0.05}, {freeze_to: 0, epochs: 3, lr: 0.02}]"
MULTI = "data.label_col=[pos, neg]"  # write_tasks_csv's 0/1 columns
REGRESSION = ("data.task=regression", "data.label_col=score", "model.y_range=[0.5, 4.5]")  # as the tests train it
# small ranges, and no pruning, so that both trials train to the end in a few seconds
PATIENT_STAGES = "train.stages=[{freeze_to: -1, epochs: 2, lr: 0.05}, {freeze_to: 0, epochs: 6, lr: 0.02}]"
SEARCH = ("search.prune=false", "search.epochs=[1, 2]", "search.early_epochs=[1, 1]", "search.bs=[8, 16]")


def make_data(folder: Path) -> None:
    sys.path.insert(0, str(HERE / "tests"))
    from conftest import write_dump, write_easy_csv, write_tasks_csv
    folder.mkdir(parents=True, exist_ok=True)
    write_dump(folder / "wiki-pages-articles.xml.bz2", n_articles=16)
    write_easy_csv(folder / "train.csv", 200, seed=1)
    write_easy_csv(folder / "test.csv", 60, seed=2)
    # columns pos, neg (multi-label) and score (regression) on the same texts
    write_tasks_csv(folder / "train-tasks.csv", 160, seed=1)
    write_tasks_csv(folder / "test-tasks.csv", 40, seed=2)


def _env(repo: Path, cache: Path) -> dict:
    return {**os.environ, "CI": "true", "PYTHONPATH": str(repo), "ULMFIT_CACHE": str(cache)}


def _ulmfit(repo: Path, env: dict, *args, wait: bool = True):
    cmd = [sys.executable, "-m", "ulmfit_cli", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res


def _killed_then_resumed(repo: Path, env: dict, stage: str, args: list, run_dir: Path) -> None:
    """SIGKILL the run as soon as its first checkpoint exists (wherever that is), then --resume it."""
    proc = _ulmfit(repo, env, stage, *args, "--run-dir", run_dir, wait=False)
    last = run_dir.parent / f".{run_dir.name}.partial" / "checkpoints" / "last.pt"
    while not last.exists():
        if proc.poll() is not None:
            sys.exit(f"{stage} ended before it could be killed")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _ulmfit(repo, env, stage, "--run-dir", run_dir, "--resume")


def _sets(*overrides) -> list:
    return [a for s in overrides for a in ("--set", s)]


def _predict(repo: Path, env: dict, model: Path, data: Path, out: Path) -> None:
    """Predictions to stdout, kept as `out` (the file is the same whichever version writes it)."""
    res = _ulmfit(repo, env, "predict", "--model", model, "--input", data, "--output", "-")
    out.write_text(res.stdout)


def run_chain(repo: Path, data: Path, out: Path) -> None:
    if not (data / "train-tasks.csv").is_file():
        sys.exit(f"{data} is from an older version of this script: run `compare_chain.py data {data}` again")
    out.mkdir(parents=True, exist_ok=True)
    env = _env(repo, out / "cache")
    tiny = repo / "configs" / "tiny.yaml"
    pre = ["-c", tiny, "--set", f"data.source={data / 'wiki-pages-articles.xml.bz2'}", "--set", "train.epochs=3",
           "--set", "train.lr=0.03", "--set", "model.drop_mult=0.2", "--set", "train.checkpoint_every=5"]
    _ulmfit(repo, env, "pretrain", *pre, "--run-dir", out / "lm")
    _ulmfit(repo, env, "finetune-lm", "-c", tiny, "--set", f"data.train={data / 'train.csv'}",
            "--set", f"init.from_run={out / 'lm'}", "--set", "train.epochs=2", "--run-dir", out / "ft")

    def clf_args(train: str, test: str, init: str, *more) -> list:
        return ["-c", tiny, *_sets(f"data.train={data / train}", f"data.test={data / test}",
                                   f"init.from_run={out / init}", "data.valid_pct=0.25", STAGES, *more)]
    clf = clf_args("train.csv", "test.csv", "ft", "train.checkpoint_every=7")
    _ulmfit(repo, env, "train-clf", *clf, "--run-dir", out / "clf")
    _killed_then_resumed(repo, env, "pretrain", pre, out / "lm-resumed")
    _killed_then_resumed(repo, env, "train-clf", clf, out / "clf-resumed")
    bwd = ["-c", tiny, "--set", f"data.source={data / 'wiki-pages-articles.xml.bz2'}", "--set", "data.backwards=true"]
    _ulmfit(repo, env, "pretrain", *bwd, "--run-dir", out / "lm-bwd")
    res = _ulmfit(repo, env, "generate", "--run-dir", out / "ft", "--prompt", "the history of", "--n-words", "12",
                  "--seed", "0", "--n-samples", "2")
    (out / "generated.txt").write_text(res.stdout)
    _predict(repo, env, out / "clf", data / "test.csv", out / "predictions.csv")
    # (the steps above are the chain's first version, unchanged, so that its old outputs stay comparable)

    # the other two tasks: train, predict and evaluate on the file with their columns
    for name, task in (("multi", (MULTI,)), ("reg", REGRESSION)):
        _ulmfit(repo, env, "train-clf", *clf_args("train-tasks.csv", "test-tasks.csv", "ft", *task),
                "--run-dir", out / f"clf-{name}")
        _predict(repo, env, out / f"clf-{name}", data / "test-tasks.csv", out / f"predictions-{name}.csv")
        _ulmfit(repo, env, "evaluate", "-m", out / f"clf-{name}", "-i", data / "test-tasks.csv",
                "-o", out / f"eval-{name}")

    # a forward+backward pair: finetune-lm from the two pretrain runs, train-clf from that pair
    _ulmfit(repo, env, "finetune-lm", "--directions", "both", "-c", tiny,
            *_sets(f"data.train={data / 'train.csv'}", f"init.from_run={out / 'lm'}",
                   f"init.from_run_backward={out / 'lm-bwd'}", "train.epochs=2"), "--run-dir", out / "ft-pair")
    _ulmfit(repo, env, "train-clf", "--directions", "both", *clf_args("train.csv", "test.csv", "ft-pair"),
            "--run-dir", out / "clf-pair")
    _predict(repo, env, out / "clf-pair", data / "test.csv", out / "predictions-pair.csv")

    _ulmfit(repo, env, "tune", "-c", tiny, *_sets(f"data.train={data / 'train.csv'}", f"init.from_run={out / 'ft'}",
                                                 "data.valid_pct=0.25", STAGES, *SEARCH),
            "--trials", "2", "--run-dir", out / "tune")
    _ulmfit(repo, env, "evaluate", "-m", out / "clf", "-i", data / "test.csv", "-o", out / "eval")
    # train.patience ending a stage early (the best epoch kept), and finetune-lm on fastText lines
    _ulmfit(repo, env, "train-clf", *clf_args("train.csv", "test.csv", "ft", "train.patience=1",
                                              "train.monitor=accuracy", PATIENT_STAGES),
            "--run-dir", out / "clf-patience")
    rows = pd.read_csv(data / "train.csv")
    (out / "train.txt").write_text("".join(f"__label__{y} {t}\n" for t, y in zip(rows["text"], rows["label"])))
    _ulmfit(repo, env, "finetune-lm", "-c", tiny, *_sets(f"data.train={out / 'train.txt'}",
                                                         f"init.from_run={out / 'lm'}", "train.epochs=2"),
            "--run-dir", out / "ft-fasttext")


# ---------------------------------------------------------------- diff
RUNS = ("lm", "ft", "clf", "lm-bwd", "lm-resumed", "clf-resumed", "clf-multi", "clf-reg",
        "ft-pair/fwd", "ft-pair/bwd", "clf-pair/fwd", "clf-pair/bwd", "clf-patience", "ft-fasttext")
# (run in a, run in b): every run against itself; a resumed run must equal the uninterrupted one too
PAIRS = [(r, r) for r in RUNS] + [("lm-resumed", "lm"), ("clf-resumed", "clf")]
RESULTS = ("lm", "ft", "clf", "lm-bwd", "lm-resumed", "clf-resumed", "clf-multi", "clf-reg", "ft-pair", "clf-pair",
           "ft-pair/fwd", "ft-pair/bwd", "clf-pair/fwd", "clf-pair/bwd", "clf-patience", "ft-fasttext")
TEXTS = ("generated.txt", "predictions.csv", "predictions-multi.csv", "predictions-reg.csv", "predictions-pair.csv")
EVALS = ("eval", "eval-multi", "eval-reg")


def _volatile(key: str) -> bool:
    return key in VOLATILE or key.endswith(("_seconds", "_tokens_per_s"))


def _norm(value, out: Path):
    """A JSON/YAML value less its wall-clock figures, with the output folder's path written <out>."""
    if isinstance(value, dict):
        return {k: _norm(v, out) for k, v in value.items() if not _volatile(str(k))}
    if isinstance(value, list):
        return [_norm(v, out) for v in value]
    return value.replace(str(out), "<out>") if isinstance(value, str) else value


def _flat(doc: dict, prefix: str = "") -> dict:
    """{dotted key: value}, so that a key only one side writes is named as precisely as a value that differs."""
    flat = {}
    for k, v in doc.items():
        flat.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return flat


def _compare_docs(name: str, da: dict, db: dict, problems: list) -> None:
    for k in sorted(da.keys() & db.keys()):
        if da[k] != db[k]:
            problems.append(f"{name} {k}: {da[k]!r} != {db[k]!r}")
    if da.keys() != db.keys():  # a figure only one version writes: reported, not failed
        print(f"note: {name} keys only on one side: {sorted(da.keys() ^ db.keys())}")


def _both(a: Path, b: Path, rel: str, problems: list) -> bool:
    """Whether both outputs hold `rel`; one alone is a failure, neither a note (an output of an older chain)."""
    ea, eb = (a / rel).exists(), (b / rel).exists()
    if ea != eb:
        problems.append(f"{rel} only in {a if ea else b}")
    elif not ea:
        print(f"note: {rel} in neither output")
    return ea and eb


def _load(a: Path, b: Path, rel: str) -> tuple[dict, dict]:
    """A JSON or YAML file of both outputs, normalized and flattened."""
    import yaml
    read = json.loads if rel.endswith(".json") else yaml.safe_load
    return tuple(_flat(_norm(read((x / rel).read_text()), x)) for x in (a, b))


def _metrics(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(ln).items() if k not in VOLATILE} for ln in path.read_text().splitlines()]


def _compare_runs(a: Path, b: Path, problems: list) -> int:
    """Weights (bit for bit) and metrics.jsonl of each run pair; returns the weight files compared."""
    import torch
    checked = 0
    for left, right in PAIRS:
        if not (a / left).exists() and not (b / right).exists():
            print(f"note: {left} in neither output")  # an output of an older chain
            continue
        for name in ("lm.pth", "encoder.pth", "model.pth"):
            fa, fb = a / left / name, b / right / name
            if not fa.exists() and not fb.exists():
                continue
            if not fa.exists() or not fb.exists():
                problems.append(f"{left}/{name} or {right}/{name} missing")
                continue
            wa, wb = torch.load(fa, weights_only=True), torch.load(fb, weights_only=True)
            checked += 1
            if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
                bad = [k for k in wa if k not in wb or not torch.equal(wa[k], wb[k])][:3]
                problems.append(f"{left}/{name} != {right}/{name}: {bad}")
        ma, mb = _metrics(a / left / "metrics.jsonl"), _metrics(b / right / "metrics.jsonl")
        # figures both versions write must agree; a field only one of them writes is reported, not failed
        for i, (ra, rb) in enumerate(zip(ma, mb)):
            for k in ra.keys() & rb.keys():
                if ra[k] != rb[k]:
                    problems.append(f"{left}/metrics.jsonl line {i + 1} {k}: {ra[k]!r} != {rb[k]!r}")
            if ra.keys() != rb.keys():
                print(f"note: {left}/metrics.jsonl line {i + 1} keys differ: {sorted(ra.keys() ^ rb.keys())}")
        if len(ma) != len(mb):
            problems.append(f"{left}/metrics.jsonl: {len(ma)} lines vs {len(mb)}")
    return checked


def _compare_evals(a: Path, b: Path, problems: list) -> None:
    """evaluate's report.json as a document, its probabilities/predictions.npy bit for bit."""
    import numpy as np
    for folder in EVALS:
        if _both(a, b, f"{folder}/report.json", problems):
            _compare_docs(f"{folder}/report.json", *_load(a, b, f"{folder}/report.json"), problems)
        for npy in sorted({p.name for x in (a, b) for p in (x / folder).glob("*.npy")}):
            rel = f"{folder}/{npy}"
            if _both(a, b, rel, problems) and not np.array_equal(np.load(a / rel), np.load(b / rel)):
                problems.append(f"{rel} differs")


def _trials(path: Path) -> list[dict]:
    with path.open(newline="") as f:  # less `seconds`, each trial's wall-clock time
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _compare_tune(a: Path, b: Path, problems: list) -> None:
    if _both(a, b, "tune/trials.csv", problems):
        ta, tb = _trials(a / "tune" / "trials.csv"), _trials(b / "tune" / "trials.csv")
        if len(ta) != len(tb):
            problems.append(f"tune/trials.csv: {len(ta)} trials vs {len(tb)}")
        for i, (ra, rb) in enumerate(zip(ta, tb)):
            _compare_docs(f"tune/trials.csv trial {i + 1}", ra, rb, problems)
    if _both(a, b, "tune/best.yaml", problems):
        _compare_docs("tune/best.yaml", *_load(a, b, "tune/best.yaml"), problems)


def diff(a: Path, b: Path) -> int:
    a, b = a.resolve(), b.resolve()  # as run_chain wrote them into the paths the outputs record
    problems = []
    checked = _compare_runs(a, b, problems)
    for run in RESULTS:
        if _both(a, b, f"{run}/results.json", problems):
            _compare_docs(f"{run}/results.json", *_load(a, b, f"{run}/results.json"), problems)
    for name in TEXTS:
        if _both(a, b, name, problems) and (a / name).read_text() != (b / name).read_text():
            problems.append(f"{name} differs")
    _compare_evals(a, b, problems)
    _compare_tune(a, b, problems)
    print(f"{checked} weight files compared, metrics.jsonl of {len(PAIRS)} run pairs, results.json of "
          f"{len(RESULTS)} runs, {len(TEXTS)} text outputs, {len(EVALS)} evaluate reports, tune trials and best.yaml")
    print("\n".join(problems) if problems else "identical")
    return 1 if problems else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("data").add_argument("folder", type=Path)
    r = sub.add_parser("run")
    r.add_argument("--repo", type=Path, default=HERE)
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    d = sub.add_parser("diff")
    d.add_argument("a", type=Path)
    d.add_argument("b", type=Path)
    args = p.parse_args()
    if args.cmd == "data":
        make_data(args.folder)
    elif args.cmd == "run":
        run_chain(args.repo.resolve(), args.data.resolve(), args.out.resolve())
    else:
        sys.exit(diff(args.a, args.b))


if __name__ == "__main__":
    main()
