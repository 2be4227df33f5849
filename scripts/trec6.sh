#!/usr/bin/env bash
# docs/results.md, TREC-6: ULMFiT with the Wikipedia-excerpt pretraining vs. the same pipeline
# without pretraining (the LM trained from scratch on TREC-6 texts; the paper's Table 4 ablation).
# Needs ../shared/data. Usage: bash scripts/trec6.sh [.venv/bin]
set -euo pipefail
BIN=${1:-.venv/bin}
U="$BIN/ulmfit"
t0=$SECONDS
"$U" pretrain    -c configs/demo/pretrain.yaml --set run.name=trec6-wiki-lm --force
"$U" finetune-lm -c configs/trec6/finetune-lm.yaml --force
"$U" train-clf   -c configs/trec6/train-clf.yaml --force
echo "with pretraining: $((SECONDS - t0)) s"; t1=$SECONDS
# Same sizes as the pretrained LM, but no init.from_run: LM from scratch on TREC-6 only.
"$U" finetune-lm -c configs/trec6/finetune-lm.yaml --set init.from_run=null --set run.name=trec6-ft-noprt \
  --set model.emb_sz=128 --set model.n_hid=384 --set model.n_layers=2 --set model.drop_mult=0.3 --force
"$U" train-clf   -c configs/trec6/train-clf.yaml --set init.from_run=runs/trec6-ft-noprt --set run.name=trec6-clf-noprt --force
echo "without pretraining: $((SECONDS - t1)) s"
for r in trec6-clf trec6-clf-noprt; do echo "$r"; grep -E '"(valid|test)_(accuracy|macro_f1)"' runs/$r/results.json; done
