#!/usr/bin/env bash
# Reproduces docs/results.md's "Small data" tables (issue 16; needs ../shared/data for SST-2; 2-core CPU).
# For TREC-6 and SST-2: the forward+backward LM pair fine-tuned in one command, then train-clf with the
# default recipe and with the recipe `ulmfit tune` finds on the validation set, each as a forward+backward
# pair (forward, backward and their ensemble) beside the TF-IDF baseline of the same run. Test sets are
# scored once, by the final train-clf runs. Expects runs/wiki-lm and runs/wiki-lm-bwd (scripts/results.sh).
# Usage: bash scripts/results-small-data.sh [.venv/bin] [trials]
set -euo pipefail
BIN=${1:-.venv/bin}
TRIALS=${2:-10}
U="$BIN/ulmfit"
DATA=../shared/data
declare -A secs
for ds in trec6 sst2; do
  if [ "$ds" = sst2 ]; then
    D=(--set "data.train=$DATA/sst2/train.csv" --set "data.valid=$DATA/sst2/dev.csv")
  else
    D=(--set "data.train=$DATA/trec6/train.csv")
  fi
  T=("${D[@]}" --set "data.test=$DATA/$ds/test.csv")
  t=$SECONDS
  [ -f "runs/$ds-ft-pair/directions.json" ] || "$U" finetune-lm -c "configs/$ds/finetune-lm.yaml" "${D[@]}" \
    --directions both --set init.from_run=runs/wiki-lm --set init.from_run_backward=runs/wiki-lm-bwd \
    --run-dir "runs/$ds-ft-pair" --force
  secs[$ds-ft]=$((SECONDS - t)); t=$SECONDS
  # the default recipe: train-clf's own defaults (the config names data and upstream only)
  "$U" train-clf -c "configs/$ds/train-clf.yaml" "${T[@]}" --set "init.from_run=runs/$ds-ft-pair" \
    --directions both --run-dir "runs/$ds-clf-default" --force
  secs[$ds-default]=$((SECONDS - t)); t=$SECONDS
  [ -f "runs/$ds-tune/best.yaml" ] || "$U" tune -c "configs/$ds/train-clf.yaml" "${T[@]}" \
    --set "init.from_run=runs/$ds-ft-pair/fwd" --trials "$TRIALS" --run-dir "runs/$ds-tune" --force
  secs[$ds-tune]=$((SECONDS - t)); t=$SECONDS
  "$U" train-clf -c "runs/$ds-tune/best.yaml" --set "init.from_run=runs/$ds-ft-pair" --directions both \
    --run-dir "runs/$ds-clf-searched" --force
  secs[$ds-searched]=$((SECONDS - t))
done
for ds in trec6 sst2; do
  echo
  echo "$ds: LM pair ${secs[$ds-ft]} s, default pair ${secs[$ds-default]} s, search ${secs[$ds-tune]} s ($TRIALS trials), searched pair ${secs[$ds-searched]} s"
  echo "| recipe | model | test accuracy | test macro-F1 | baseline (same run) |"
  echo "| --- | --- | --- | --- | --- |"
  "$BIN/python" - "$ds" <<'PY'
import json, sys
ds = sys.argv[1]
for recipe in ("default", "searched"):
    r = json.load(open(f"runs/{ds}-clf-{recipe}/results.json"))
    base = f"{r['baseline_test_accuracy']:.1%} / {r['baseline_test_macro_f1']:.3f}"
    for name, p in (("forward", "fwd_"), ("backward", "bwd_"), ("forward + backward ensemble", "")):
        print(f"| {recipe} | {name} | {r[p + 'test_accuracy']:.1%} | {r[p + 'test_macro_f1']:.3f} | {base} |")
PY
done
