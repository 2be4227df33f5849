#!/usr/bin/env bash
# Reproduces the tables of docs/results.md (needs ../shared/data; a 2-core CPU is enough, ~40 min).
# For TREC-6 and SST-2: TF-IDF + logistic regression, the classifier without pretraining, forward
# ULMFiT, backward ULMFiT and their ensemble. Both LMs are pretrained once on the Wikipedia excerpt.
# Usage: bash scripts/results.sh [.venv/bin]
set -euo pipefail
BIN=${1:-.venv/bin}
U="$BIN/ulmfit"
SIZE=(--set model.emb_sz=128 --set model.n_hid=384 --set model.n_layers=2)  # as configs/demo/pretrain.yaml
DATA=../shared/data
declare -A secs

t=$SECONDS
"$U" pretrain -c configs/demo/pretrain.yaml --set run.name=wiki-lm --force
secs[wiki-lm]=$((SECONDS - t)); t=$SECONDS
"$U" pretrain -c configs/demo/pretrain.yaml --set run.name=wiki-lm-bwd --set data.backwards=true --force
secs[wiki-lm-bwd]=$((SECONDS - t))

for ds in trec6 sst2; do
  if [ "$ds" = sst2 ]; then SPLIT=(--valid "$DATA/sst2/dev.csv"); else SPLIT=(); fi
  # the recipes' own data paths (data/) may not hold this set: read it from $DATA
  FT=(--set "data.train=$DATA/$ds/train.csv")
  [ "$ds" = sst2 ] && FT+=(--set "data.valid=$DATA/sst2/dev.csv")
  CLF=("${FT[@]}" --set "data.test=$DATA/$ds/test.csv")
  t=$SECONDS
  "$BIN/python" bench/tfidf_baseline.py --train "$DATA/$ds/train.csv" "${SPLIT[@]}" --test "$DATA/$ds/test.csv" \
    > "runs/$ds-tfidf.json"
  secs[$ds-tfidf]=$((SECONDS - t)); t=$SECONDS

  # No pretraining: the classifier from random weights; gradual unfreezing means nothing there, so all
  # layers train for the same 8 epochs in total.
  "$U" train-clf -c "configs/$ds/train-clf.yaml" "${CLF[@]}" --set init.from_run=null --set run.name="$ds-clf-nolm" \
    "${SIZE[@]}" --set "train.stages=[{freeze_to: 0, epochs: 8, lr: 1.0e-2}]" --set train.lr_div=1 --force
  secs[$ds-clf-nolm]=$((SECONDS - t)); t=$SECONDS

  "$U" finetune-lm -c "configs/$ds/finetune-lm.yaml" "${FT[@]}" --set init.from_run=runs/wiki-lm --force
  "$U" train-clf   -c "configs/$ds/train-clf.yaml" "${CLF[@]}" --set init.from_run="runs/$ds-ft" --force
  secs[$ds-clf]=$((SECONDS - t)); t=$SECONDS

  "$U" finetune-lm -c "configs/$ds/finetune-lm.yaml" "${FT[@]}" --set init.from_run=runs/wiki-lm-bwd \
    --set data.backwards=true --set run.name="$ds-ft-bwd" --force
  "$U" train-clf   -c "configs/$ds/train-clf.yaml" "${CLF[@]}" --set init.from_run="runs/$ds-ft-bwd" \
    --set data.backwards=true --set run.name="$ds-clf-bwd" --force
  secs[$ds-clf-bwd]=$((SECONDS - t)); t=$SECONDS

  "$U" evaluate -m "runs/$ds-clf" -m "runs/$ds-clf-bwd" -i "$DATA/$ds/test.csv" -o "runs/$ds-ensemble"
  secs[$ds-ensemble]=$((SECONDS - t))
done

echo
echo "pretraining: forward ${secs[wiki-lm]} s, backward ${secs[wiki-lm-bwd]} s"
for ds in trec6 sst2; do
  echo
  echo "$ds"
  echo "| model | test accuracy | test macro-F1 | wall time |"
  echo "| --- | --- | --- | --- |"
  "$BIN/python" - "$ds" "${secs[$ds-tfidf]}" "${secs[$ds-clf-nolm]}" "${secs[$ds-clf]}" "${secs[$ds-clf-bwd]}" \
    "${secs[$ds-ensemble]}" <<'PY'
import json, sys
ds, t_tfidf, t_nolm, t_fwd, t_bwd, t_ens = sys.argv[1:]
load = lambda p: json.load(open(p))
rows = [("TF-IDF + logistic regression", load(f"runs/{ds}-tfidf.json"), t_tfidf),
        ("AWD-LSTM classifier, no pretraining", load(f"runs/{ds}-clf-nolm/results.json"), t_nolm),
        ("ULMFiT forward", load(f"runs/{ds}-clf/results.json"), t_fwd),
        ("ULMFiT backward", load(f"runs/{ds}-clf-bwd/results.json"), t_bwd)]
ens = load(f"runs/{ds}-ensemble/report.json")
rows.append(("ULMFiT forward + backward ensemble", {"test_accuracy": ens["accuracy"], "test_macro_f1": ens["macro_f1"]}, t_ens))
for name, r, t in rows:
    print(f"| {name} | {r['test_accuracy']:.1%} | {r['test_macro_f1']:.3f} | {t} s |")
PY
done
