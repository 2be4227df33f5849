#!/usr/bin/env bash
# The embedded default pipeline (`make demo`), offline: pretrain a small AWD-LSTM on gensim's Wikipedia
# excerpt, fine-tune it on the TREC-6 questions shipped in data/trec6, train the question classifier with
# gradual unfreezing, and print its test accuracy beside a TF-IDF + logistic-regression baseline fitted
# on the same splits, a few predictions and text sampled from the LM. Re-running replaces runs/demo-*.
set -euo pipefail
BIN=${1:-.venv/bin}
U="$BIN/ulmfit"
"$U" pretrain    --config configs/demo/pretrain.yaml --force
"$U" finetune-lm --config configs/trec6/finetune-lm.yaml --set init.from_run=runs/demo-lm --set run.name=demo-ft --force
"$U" train-clf   --config configs/trec6/train-clf.yaml   --set init.from_run=runs/demo-ft --set run.name=demo-clf --force
echo
echo "== text sampled from the pretrained LM (runs/demo-lm) =="
"$U" generate --run-dir runs/demo-lm --prompt "The history of" --n-words 40 --temperature 0.8 --seed 0 --n-samples 2
echo
"$BIN/python" - <<'PY'
import json
from ulmfit_cli import load_classifier

r = json.load(open("runs/demo-clf/results.json"))
print("== TREC-6 question classifier (runs/demo-clf), 500 test questions ==")
rows = [(f"blend, w {r['blend_weight']:.2f} (what predict uses)", "")] if "blend_weight" in r else []
rows += [("ULMFiT classifier alone", "classifier_"), ("TF-IDF + logistic regression baseline", "baseline_")]
for name, prefix in rows:
    print(f"  {name:<38} test accuracy {r[prefix + 'test_accuracy']:.1%}   macro-F1 {r[prefix + 'test_macro_f1']:.3f}")
questions = ["What is the capital of Australia ?", "Who painted the Mona Lisa ?",
             "How many miles is it from London to Paris ?", "What does NASA stand for ?",
             "Why is the sky blue ?"]
clf = load_classifier("runs/demo-clf")
print("\n== a few predictions (ulmfit_cli.load_classifier) ==")
for q, label, p in zip(questions, clf.predict(questions), clf.predict_proba(questions).max(1)):
    print(f"  {label:<5} {p:.2f}  {q}")
PY
