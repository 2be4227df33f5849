#!/usr/bin/env bash
# LM training throughput of 1 process against N processes (torchrun, DDP) for the same global batch.
# Usage: bash bench/distributed_scaling.sh [N=2] [.venv/bin]
# CPU: Gloo, each process with cores/N threads; GPU: NCCL, one GPU per process.
set -euo pipefail
N=${1:-2}
BIN=${2:-.venv/bin}
ARGS=(-c configs/demo/pretrain.yaml --set train.epochs=1 --set train.checkpoint_minutes=null)
OUT=$(mktemp -d)
CORES=$(nproc)
t=$SECONDS
OMP_NUM_THREADS=$CORES CI=true "$BIN/python" -m ulmfit_cli pretrain "${ARGS[@]}" --run-dir "$OUT/one"
one=$((SECONDS - t)); t=$SECONDS
OMP_NUM_THREADS=$((CORES / N > 0 ? CORES / N : 1)) CI=true "$BIN/torchrun" --nproc_per_node "$N" \
  -m ulmfit_cli pretrain "${ARGS[@]}" --run-dir "$OUT/many"
many=$((SECONDS - t))
"$BIN/python" - "$OUT" "$N" "$one" "$many" <<'PY'
import json, sys
out, n, one, many = sys.argv[1:]
rows = []
for name, procs, wall in (("one", 1, one), ("many", int(n), many)):
    m = [json.loads(l) for l in open(f"{out}/{name}/metrics.jsonl")][-1]
    r = json.load(open(f"{out}/{name}/results.json"))
    rows.append((procs, m["tokens_per_s"], m["seconds"], r["valid_loss"], wall))
print("| processes | tokens/s (training) | epoch seconds | valid loss | wall time (incl. start-up) |")
print("| --- | --- | --- | --- | --- |")
for p, tps, sec, loss, wall in rows:
    print(f"| {p} | {tps:,.0f} | {sec:.1f} | {loss:.4f} | {wall} s |")
print(f"\nspeed-up {rows[1][1] / rows[0][1]:.2f}x with {n} processes")
PY
rm -rf "$OUT"
