#!/usr/bin/env bash
# The embedded default pipeline (`make demo`): pretrain on gensim's Wikipedia excerpt, fine-tune and
# classify gensim's 200 movie-review sentences, then sample text. Re-running replaces runs/demo-*.
set -euo pipefail
BIN=${1:-.venv/bin}
U="$BIN/ulmfit"
"$U" pretrain    --config configs/demo/pretrain.yaml    --force
"$U" finetune-lm --config configs/demo/finetune-lm.yaml --force
"$U" train-clf   --config configs/demo/train-clf.yaml   --force
echo
echo "== text sampled from the pretrained LM (runs/demo-lm) =="
"$U" generate --run-dir runs/demo-lm --prompt "The history of" --n-words 40 --temperature 0.8 --seed 0 --n-samples 3
echo
echo "== the classifier (runs/demo-clf/results.json) =="
cat runs/demo-clf/results.json
