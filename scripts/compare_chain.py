"""Behaviour check for refactors: run the tiny pretrain -> finetune-lm -> train-clf chain (and a pretrain
and a train-clf run SIGKILLed mid-run, then resumed) in a checkout, then diff two such outputs.

    python scripts/compare_chain.py data /tmp/chain-data                  # the inputs, once
    git worktree add /tmp/base <commit>
    python scripts/compare_chain.py run --repo /tmp/base --data /tmp/chain-data --out /tmp/chain-base
    python scripts/compare_chain.py run --repo .         --data /tmp/chain-data --out /tmp/chain-new
    python scripts/compare_chain.py diff /tmp/chain-base /tmp/chain-new   # exit 0: bit-identical

Only the command line is used (it is what both commits share). Each checkout runs with its own code
(PYTHONPATH, working directory); the same Python serves both.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
VOLATILE = {"seconds", "tokens_per_s"}  # wall-clock figures
STAGES = "train.stages=[{freeze_to: -1, epochs: 2, lr: 0.05}, {freeze_to: 0, epochs: 3, lr: 0.02}]"


def make_data(folder: Path) -> None:
    sys.path.insert(0, str(HERE / "tests"))
    from conftest import write_dump, write_easy_csv
    folder.mkdir(parents=True, exist_ok=True)
    write_dump(folder / "wiki-pages-articles.xml.bz2", n_articles=16)
    write_easy_csv(folder / "train.csv", 200, seed=1)
    write_easy_csv(folder / "test.csv", 60, seed=2)


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


def run_chain(repo: Path, data: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = _env(repo, out / "cache")
    tiny = repo / "configs" / "tiny.yaml"
    pre = ["-c", tiny, "--set", f"data.source={data / 'wiki-pages-articles.xml.bz2'}", "--set", "train.epochs=3",
           "--set", "train.lr=0.03", "--set", "model.drop_mult=0.2", "--set", "train.checkpoint_every=5"]
    _ulmfit(repo, env, "pretrain", *pre, "--run-dir", out / "lm")
    _ulmfit(repo, env, "finetune-lm", "-c", tiny, "--set", f"data.train={data / 'train.csv'}",
            "--set", f"init.from_run={out / 'lm'}", "--set", "train.epochs=2", "--run-dir", out / "ft")
    clf = ["-c", tiny, "--set", f"data.train={data / 'train.csv'}", "--set", f"data.test={data / 'test.csv'}",
           "--set", f"init.from_run={out / 'ft'}", "--set", "data.valid_pct=0.25", "--set", STAGES,
           "--set", "train.checkpoint_every=7"]
    _ulmfit(repo, env, "train-clf", *clf, "--run-dir", out / "clf")
    _killed_then_resumed(repo, env, "pretrain", pre, out / "lm-resumed")
    _killed_then_resumed(repo, env, "train-clf", clf, out / "clf-resumed")
    bwd = ["-c", tiny, "--set", f"data.source={data / 'wiki-pages-articles.xml.bz2'}", "--set", "data.backwards=true"]
    _ulmfit(repo, env, "pretrain", *bwd, "--run-dir", out / "lm-bwd")
    res = _ulmfit(repo, env, "generate", "--run-dir", out / "ft", "--prompt", "the history of", "--n-words", "12",
                  "--seed", "0", "--n-samples", "2")
    (out / "generated.txt").write_text(res.stdout)
    res = _ulmfit(repo, env, "predict", "--model", out / "clf", "--input", data / "test.csv", "--output", "-")
    (out / "predictions.csv").write_text(res.stdout)


def _metrics(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(ln).items() if k not in VOLATILE} for ln in path.read_text().splitlines()]


def diff(a: Path, b: Path) -> int:
    import torch
    problems, checked = [], 0
    pairs = [("lm", "lm"), ("ft", "ft"), ("clf", "clf"), ("lm-bwd", "lm-bwd"),
             ("lm-resumed", "lm"), ("clf-resumed", "clf"), ("lm-resumed", "lm-resumed"), ("clf-resumed", "clf-resumed")]
    for left, right in pairs:  # (run in a, run in b); a resumed run must equal the uninterrupted one too
        for name in ("lm.pth", "encoder.pth", "model.pth"):
            fa, fb = a / left / name, b / right / name
            if not fa.exists() and not fb.exists():
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
    for name in ("generated.txt", "predictions.csv"):
        if (a / name).read_text() != (b / name).read_text():
            problems.append(f"{name} differs")
    print(f"{checked} weight files compared, metrics.jsonl of {len(pairs)} run pairs, generated text, predictions")
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
