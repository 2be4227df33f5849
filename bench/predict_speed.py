"""Inference speed, side by side in one run on the same model and texts: stock fastai (`learn.predict` per
text, and `learn.get_preds(dl=learn.dls.test_dl(texts))`, with the same weights in `text_classifier_learner`),
ulmfit before this path (fastai's SortedDL per call, as `predict_proba` ran until the inference issue),
ulmfit on PyTorch fp32, and ulmfit's ONNX bundle in fp32 and int8 (`ulmfit export --format onnx
[--quantize int8]`); fastText as a reference row when it is installed.

Reported: texts/s at batch sizes 1 and 256 (bs 1: one call per text), p50/p99 latency of single texts, and in
fresh processes (one per row) the cold start (process start to the first prediction) and the peak RSS. The
rows time the model alone, as stock fastai runs it; a model trained with a blend (`model.blend`) gets one
more row with its TF-IDF baseline mixed in, as `ulmfit predict` runs it.

  python bench/predict_speed.py [--model runs/demo-clf] [--threads 1]
Texts: TREC-6 test (data/trec6) and, where ../shared/data is, SST-2 train; every row classifies the same texts.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2" / "train.csv"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def corpora(quick: bool) -> dict[str, list[str]]:
    out = {"TREC-6 test": pd.read_csv(ROOT / "data/trec6/test.csv")["text"].astype(str).tolist()}
    if SST2.is_file():
        out["SST-2 train"] = pd.read_csv(SST2)["text"].astype(str).tolist()
    return {k: v[:60] for k, v in out.items()} if quick else out


def latencies(predict_one, texts: list[str], n: int, limit_s: float) -> np.ndarray:
    """Seconds per single-text call, over at most `n` texts and `limit_s` seconds."""
    predict_one(texts[0])  # warm
    out, start = [], time.perf_counter()
    for t in texts[:n]:
        t0 = time.perf_counter()
        predict_one(t)
        out.append(time.perf_counter() - t0)
        if time.perf_counter() - start > limit_s:
            break
    return np.array(out)


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def stock_learner(clf, device: str = "cpu"):
    """fastai's own classifier learner for the same model: TextDataLoaders with the model's vocab, the same
    AWD-LSTM sizes and head, the trained weights loaded, on `device` (fp32, as `load_learner` gives it)."""
    import torch
    from fastai.text.all import AWD_LSTM, TextDataLoaders, text_classifier_learner

    from ulmfit_cli.train.learners import awd_config
    df = pd.DataFrame({"text": ["x"] * (2 * len(clf.labels)), "label": clf.labels * 2})
    dls = TextDataLoaders.from_df(df, text_col="text", label_col="label", text_vocab=clf.vocab,
                                  seq_len=clf.spec.bptt, valid_pct=0.5, seed=0, bs=64)
    assert list(dls.vocab[1]) == clf.labels, "fastai orders the classes differently"
    learn = text_classifier_learner(dls, AWD_LSTM, seq_len=clf.spec.bptt, pretrained=False,
                                    config=awd_config(clf.spec.arch.model_dump(), classifier=True),
                                    drop_mult=clf.spec.drop_mult, lin_ftrs=clf.spec.lin_ftrs,
                                    max_len=clf.spec.max_len)
    learn.model.load_state_dict(clf.model.state_dict())
    learn.dls.to(torch.device(device))
    learn.model.to(device)
    return learn.to_fp32()


def dataloader_outputs(clf, texts, pad=None, device: str = "cpu") -> np.ndarray:
    """ulmfit's predict_proba until the inference issue: fastai's SortedDL (bs 64, a worker process, built per
    call) padded by `pad` (default the training loader's, `loaders.clf_dl`; fastai's `pad_input_chunk` was
    the one before), its longest-first order undone as get_preds undoes it. tests/test_deploy.py holds the
    fast path to it."""
    import torch

    from ulmfit_cli.corpus.direction import orient_docs
    from ulmfit_cli.train.loaders import clf_dl
    ids = clf.token_ids(texts)
    dl = clf_dl(orient_docs(ids, clf.spec.backwards), np.zeros(len(ids), dtype=np.int64), clf.vocab, 64,
                clf.spec.bptt, torch.device(device))
    if pad is not None:
        dl = dl.new(before_batch=pad)
    order, out, done = np.asarray(dl.get_idxs()), np.zeros((len(ids), len(clf.labels)), np.float32), 0
    with torch.no_grad():
        for x, _ in dl:
            out[order[done:done + len(x)]] = clf.task.activation(clf.model(x)[0].float()).cpu().numpy()
            done += len(x)
    return out


COLD = """
import sys, time
t0 = float(sys.argv[1])
from ulmfit_cli import load_classifier
clf = load_classifier(sys.argv[2], runtime=sys.argv[3], threads=1)
clf.predict(["What is the capital of Peru ?"])
first = time.time() - t0
texts = [line.rstrip("\\n") for line in open(sys.argv[4], encoding="utf-8")]
clf.predict_proba(texts)
import json
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a big process would report the parent's
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"cold_s": first, "rss_mb": hwm / 1024, "torch": "torch" in sys.modules}))
"""


def cold(path: Path, runtime: str, texts_file: Path, python: str = sys.executable) -> dict:
    """Process start to first prediction, and peak RSS after classifying the texts, in a fresh process."""
    res = subprocess.run([python, "-c", COLD, repr(time.time()), str(path), runtime, str(texts_file)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if res.returncode:
        raise SystemExit(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def cli_cold(model: Path, python: str = sys.executable) -> float:
    """`echo text | ulmfit predict --model M --input - --output -`, wall seconds."""
    t0 = time.perf_counter()
    subprocess.run([python, "-m", "ulmfit_cli", "predict", "--model", str(model), "--input", "-",
                    "--output", "-"], input="What is the capital of Peru ?\n", capture_output=True, text=True,
                   timeout=600, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def fasttext_row(texts: list[str], threads: int):
    try:
        import fasttext
    except ImportError:
        return None
    train = pd.read_csv(ROOT / "data/trec6/train.csv")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for lbl, t in zip(train["label"], train["text"]):
            f.write(f"__label__{lbl} {t}\n")
    model = fasttext.train_supervised(f.name, epoch=25, wordNgrams=2, thread=threads, verbose=0)
    os.unlink(f.name)
    # the binding's own calls: fastText 0.9.3's Python wrapper fails on NumPy 2 (np.array(copy=False))
    lat = latencies(lambda t: model.f.predict(t, 1, 0.0, "strict"), texts, 2000, 10)
    _, s = timed(lambda: model.f.multilinePredict(texts, 1, 0.0, "strict"))
    return lat, len(texts) / s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "runs" / "demo-clf", help="a train-clf run dir")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for every row (PyTorch, onnxruntime)")
    ap.add_argument("--single", type=int, default=300, help="single-text calls per row at most")
    ap.add_argument("--quick", action="store_true", help="few texts and calls (the test's smoke run)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: the PyTorch rows and stock fastai's (the ONNX "
                                                    "rows run on onnxruntime's CPU provider)")
    ap.add_argument("--runtime-python", help="the python of a venv with requirements-runtime.txt (no torch): "
                                             "the ONNX rows' cold start and RSS are measured there too")
    args = ap.parse_args()
    import torch

    from ulmfit_cli import api, load_classifier
    torch.set_num_threads(args.threads)
    single, limit = (10, 5.0) if args.quick else (args.single, 60.0)
    work = Path(tempfile.mkdtemp(prefix="predict-speed-"))
    (clf, load_torch) = timed(lambda: load_classifier(args.model, device=args.device, threads=args.threads))
    bundles = {"fp32": api.export(args.model, work / "onnx-fp32", fmt="onnx"),
               "int8": api.export(args.model, work / "onnx-int8", fmt="onnx", quantize="int8")}
    int8_card = json.loads((bundles["int8"] / "card.json").read_text())["export"]
    rows = {"ulmfit PyTorch fp32": clf}
    for precision, b in bundles.items():
        rows[f"ulmfit ONNX {precision}" + ("" if precision == "fp32" or int8_card["precision"] == "int8"
                                           else " (not kept: fp32)")] = load_classifier(b, threads=args.threads)
    blended = {}
    if clf.blend is not None:  # the rows time the model alone, as stock fastai runs it; one more row: the blend
        blended["ulmfit PyTorch fp32 + its TF-IDF blend (what predict runs)"] = clf
        rows = {k: copy.copy(v) for k, v in rows.items()}
        for v in rows.values():
            v.blend = None
    learn = stock_learner(clf, args.device)
    print(f"model {args.model}: emb {clf.spec.arch.emb_sz}, hidden {clf.spec.arch.n_hid}, "
          f"{clf.spec.arch.n_layers} layers; "
          + (f"CUDA ({torch.cuda.get_device_name()}) for the PyTorch and stock rows, " if args.device == "cuda" else "")
          + f"CPU, {args.threads} thread(s); torch {torch.__version__}")
    for name, texts in corpora(args.quick).items():
        n_tok = sum(map(len, clf.token_ids(texts)))
        print(f"\n## {name}: {len(texts):,} texts, {n_tok:,} tokens\n")
        print("| path | single p50 ms | single p99 ms | texts/s bs 1 | texts/s bs 256 | texts/s default batches "
              "| max abs diff vs PyTorch |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        ref = clf.proba_of_ids(clf.token_ids(texts))  # the model's outputs, without a blend
        results, notes = {}, []

        def row(label, lat, bulk, probs=None, default=None):
            diff = "" if probs is None else f"{np.abs(probs - ref).max():.1e}"
            if probs is not None and np.abs(probs - ref).max() > 1e-3:
                notes.append(f"{label}: {int((np.abs(probs - ref).max(1) > 1e-3).sum())} of {len(texts)} texts "
                             f"differ by more than 1e-3, {int((probs.argmax(1) != ref.argmax(1)).sum())} in their "
                             f"label (fastai's pad_input_chunk: short texts batched with longer ones are skipped; "
                             f"train/batches.py)" if not label.startswith("ulmfit ONNX") else
                             f"{label}: labels differ on {int((probs.argmax(1) != ref.argmax(1)).sum())} texts")
            results[label] = (np.median(lat), bulk if default is None else default)  # what a user gets
            print(f"| {label} | {np.median(lat) * 1e3:.2f} | {np.percentile(lat, 99) * 1e3:.2f} | "
                  f"{1 / lat.mean():,.0f} | {bulk:,.0f} | {'' if default is None else f'{default:,.0f}'} | {diff} |")

        with learn.no_bar(), learn.no_logging():
            lat = latencies(lambda t: learn.predict(t), texts, min(single, 50), limit)
            probs, s = timed(lambda: learn.get_preds(dl=learn.dls.test_dl(texts))[0].float().numpy())
        row("stock fastai: learn.predict / get_preds(test_dl), bs 64", lat, len(texts) / s, probs)
        lat = latencies(lambda t: dataloader_outputs(clf, [t], device=args.device), texts, min(single, 50), limit)
        probs, s = timed(lambda: dataloader_outputs(clf, texts, device=args.device))
        row("ulmfit before (SortedDL per call), bs 64", lat, len(texts) / s, probs)
        for label, model in {**rows, **blended}.items():
            lat = latencies(lambda t: model.predict_proba([t]), texts, single, limit)
            probs, s = timed(lambda: model.predict_proba(texts, bs=256, max_tokens=1 << 30))
            _, default = timed(lambda: model.predict_proba(texts))  # --bs 128 --max-tokens 8192
            row(label, lat, len(texts) / s, None if label in blended else probs, len(texts) / default)
        ft = fasttext_row(texts, args.threads) if name.startswith("TREC") else None
        if ft:
            row("fastText supervised (reference; its own model)", ft[0], ft[1])
        if notes:
            print("\n" + "\n".join(notes))
        stock, ours = results["stock fastai: learn.predict / get_preds(test_dl), bs 64"], results["ulmfit PyTorch fp32"]
        before = results["ulmfit before (SortedDL per call), bs 64"]
        per_text_500 = timed(lambda: rows["ulmfit PyTorch fp32"].predict_proba(texts[:500]))[1] / len(texts[:500])
        onnx = [v for k, v in results.items() if k.startswith("ulmfit ONNX")]
        print(f"\nsingle text p50: ulmfit {stock[0] / ours[0]:.0f}x faster than learn.predict, "
              f"{before[0] / ours[0]:.0f}x than before; p50 / per-text time of a 500-text batch "
              f"{ours[0] / per_text_500:.1f}x")
        print(f"batch (default batches; stock: get_preds at its bs 64): ulmfit PyTorch {ours[1] / stock[1]:.1f}x "
              f"get_preds; ONNX fp32 {onnx[0][1] / ours[1]:.1f}x "
              f"ulmfit PyTorch, int8 {onnx[1][1] / ours[1]:.1f}x")
    print(f"\nint8 check (validation {int8_card['int8']['figure']}): {json.dumps(int8_card['int8'])}")
    texts_file = work / "texts.txt"
    texts_file.write_text("\n".join(t.replace("\n", " ") for t in next(iter(corpora(args.quick).values()))),
                          encoding="utf-8")
    print(f"\n## cold start and memory (fresh process: start to first prediction; peak RSS after "
          f"classifying {len(texts_file.read_text().splitlines())} texts)\n")
    print("| path | cold start s | peak RSS MB | torch imported |")
    print("| --- | --- | --- | --- |")
    colds = {}
    for label, path, runtime in (("ulmfit PyTorch fp32", args.model, "torch"),
                                 ("ulmfit ONNX fp32", bundles["fp32"], "onnx"),
                                 ("ulmfit ONNX int8", bundles["int8"], "onnx")):
        c = colds[label] = cold(path, runtime, texts_file)
        print(f"| {label} | {c['cold_s']:.2f} | {c['rss_mb']:.0f} | {c['torch']} |")
        if args.runtime_python and runtime == "onnx":
            c = colds[label] = cold(path, runtime, texts_file, args.runtime_python)
            print(f"| {label}, runtime venv (requirements-runtime.txt) | {c['cold_s']:.2f} | {c['rss_mb']:.0f} | "
                  f"{c['torch']} |")
    ratio = colds["ulmfit ONNX fp32"]["rss_mb"] / colds["ulmfit PyTorch fp32"]["rss_mb"]
    print(f"\nONNX RSS / PyTorch RSS {ratio:.2f} (the last ONNX fp32 row); in-process load: PyTorch {load_torch:.2f} s")
    if not args.quick:
        print(f"`echo text | ulmfit predict --input - --output -`: run dir {cli_cold(args.model):.2f} s, "
              f"ONNX bundle {cli_cold(bundles['fp32']):.2f} s"
              + (f", ONNX bundle in the runtime venv {cli_cold(bundles['fp32'], args.runtime_python):.2f} s"
                 if args.runtime_python else ""))


if __name__ == "__main__":
    main()
