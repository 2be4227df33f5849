#!/usr/bin/env bash
# Reproduces docs/results.md's "Few labels" section (issue 25; needs ../shared/data; 2-core CPU, ~75 min).
# Expects the demo-size Wikipedia-excerpt LM fine-tuned on each set: runs/trec6-ft and runs/sst2-ft
# (scripts/results.sh makes them; made here when absent).
#   1. the defaults before this issue (the best epoch by valid_loss, no train.min_steps) and with
#      train.min_steps=400 alone, on 200- and 1,000-label samples (2 seeds; the curves of step 2, which use
#      the defaults chosen, train-clf's best epoch by accuracy and min_steps 400, train the same samples);
#   2. the learning curves at 100/200/500/1000/all labels (3 seeds below the full set), classifier against
#      the baseline fitted on the same rows, with the blend;
#   3. self-training at 200 labels, the rest of the training texts unlabelled, against none (3 seeds).
# Usage: bash scripts/results-few-labels.sh [.venv/bin] [step ...]   (steps: choose curves self-training)
set -euo pipefail
BIN=${1:-.venv/bin}
shift || true
STEPS=${*:-choose curves self-training}
U="$BIN/ulmfit"
DATA=../shared/data
[ -f runs/wiki-lm/lm.pth ] || "$U" pretrain -c configs/demo/pretrain.yaml --set run.name=wiki-lm --force
clf_args() {  # the labelled data of a set, read from $DATA
  local ds=$1
  echo --set "data.train=$DATA/$ds/train.csv" --set "data.test=$DATA/$ds/test.csv" --set "init.from_run=runs/$ds-ft"
  [ "$ds" = sst2 ] && echo --set "data.valid=$DATA/sst2/dev.csv"
  return 0
}
for ds in trec6 sst2; do
  FT=(--set "data.train=$DATA/$ds/train.csv")
  [ "$ds" = sst2 ] && FT+=(--set "data.valid=$DATA/sst2/dev.csv")
  [ -f "runs/$ds-ft/lm.pth" ] || "$U" finetune-lm -c "configs/$ds/finetune-lm.yaml" "${FT[@]}" \
    --set init.from_run=runs/wiki-lm --force
done
for ds in trec6 sst2; do
  # shellcheck disable=SC2046
  read -ra CLF <<< "$(clf_args $ds | tr '\n' ' ')"
  if [[ " $STEPS " == *" choose "* ]]; then
    for steps in null 400; do
      [ -f "runs/$ds-choose-steps-$steps/summary.md" ] && continue
      t=$SECONDS
      # before issue 25's defaults: the best epoch by valid_loss; with and without a floor on the steps
      "$U" curve -c "configs/$ds/train-clf.yaml" "${CLF[@]}" --set "train.min_steps=$steps" \
        --set train.monitor=valid_loss \
        --sizes 200,1000 --seeds 2 --run-dir "runs/$ds-choose-steps-$steps" --force > /dev/null
      echo "$ds min_steps=$steps: $((SECONDS - t)) s"
    done
  fi
  if [[ " $STEPS " == *" curves "* ]]; then
    t=$SECONDS
    "$U" curve -c "configs/$ds/train-clf.yaml" "${CLF[@]}" --sizes 100,200,500,1000,all --seeds 3 \
      --run-dir "runs/$ds-curve" --force > /dev/null
    echo "$ds curve: $((SECONDS - t)) s"
  fi
  if [[ " $STEPS " == *" self-training "* ]]; then
    for seed in 0 1 2; do
      t=$SECONDS
      S="runs/$ds-curve/samples"
      # the curve's 200-label sample, trained as its point was (run.seed 42 + seed), now with the rest of
      # the training texts unlabelled (the labelled, validation and test texts are left out of the pool)
      "$U" train-clf -c "configs/$ds/train-clf.yaml" --set "init.from_run=runs/$ds-ft" \
        --set "data.train=$S/n200-s$seed.csv" --set "data.valid=$S/valid.csv" --set "data.test=$S/test.csv" \
        --set "data.unlabelled=[$DATA/$ds/train.csv]" --set "run.seed=$((42 + seed))" \
        --run-dir "runs/$ds-self-training-s$seed" --force > /dev/null
      echo "$ds self-training seed $seed: $((SECONDS - t)) s"
    done
  fi
done
"$BIN/python" scripts/few_labels_tables.py
