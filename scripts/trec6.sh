#!/usr/bin/env bash
# Reproduces the TREC-6 table of docs/results.md (needs ../shared/data; CPU is enough):
#   1. ULMFiT: pretrain on the Wikipedia excerpt -> fine-tune the LM on TREC-6 -> classifier
#   2. no pretraining (the paper's Table 4 ablation): the same LM trained from scratch on TREC-6 only
#   3. no language model at all: the same classifier from random weights
# Usage: bash scripts/trec6.sh [.venv/bin]
set -euo pipefail
BIN=${1:-.venv/bin}
U="$BIN/ulmfit"
SIZE=(--set model.emb_sz=128 --set model.n_hid=384 --set model.n_layers=2)  # as configs/demo/pretrain.yaml
declare -A secs

t=$SECONDS
"$U" pretrain    -c configs/demo/pretrain.yaml --set run.name=trec6-wiki-lm --force
"$U" finetune-lm -c configs/trec6/finetune-lm.yaml --force
"$U" train-clf   -c configs/trec6/train-clf.yaml --force
secs[trec6-clf]=$((SECONDS - t)); t=$SECONDS

# Same sizes and epochs (1 + 4) as the fine-tuning, from random weights, one rate for all layers.
"$U" finetune-lm -c configs/trec6/finetune-lm.yaml --set init.from_run=null --set run.name=trec6-ft-scratch \
  "${SIZE[@]}" --set model.drop_mult=0.3 --set train.epochs=5 --set train.lr=1e-2 --set train.lr_div=1 --force
"$U" train-clf   -c configs/trec6/train-clf.yaml --set init.from_run=runs/trec6-ft-scratch \
  --set run.name=trec6-clf-scratch-lm --force
secs[trec6-clf-scratch-lm]=$((SECONDS - t)); t=$SECONDS

# No LM: gradual unfreezing means nothing for random weights, so all layers train for the same 8 epochs in total.
"$U" train-clf   -c configs/trec6/train-clf.yaml --set init.from_run=null --set run.name=trec6-clf-nolm \
  "${SIZE[@]}" --set "train.stages=[{freeze_to: 0, epochs: 8, lr: 1.0e-2}]" --set train.lr_div=1 --force
secs[trec6-clf-nolm]=$((SECONDS - t))

echo
echo "| run | test accuracy | test macro-F1 | valid accuracy | wall time |"
echo "| --- | --- | --- | --- | --- |"
for r in trec6-clf trec6-clf-scratch-lm trec6-clf-nolm; do
  "$BIN/python" - "$r" "${secs[$r]}" <<'PY'
import json, sys
r = json.load(open(f"runs/{sys.argv[1]}/results.json"))
print(f"| {sys.argv[1]} | {r['test_accuracy']:.1%} | {r['test_macro_f1']:.3f} | {r['valid_accuracy']:.1%} | {sys.argv[2]} s |")
PY
done
