"""LM training speed: the stock fastai recipe against ulmfit's path, same model, same tokens, one run.

Tokens: the Wikipedia sample (gensim's copy, or ../shared/data) through `ulmfit prepare`'s store,
so both sides train on the same ids and validate on the same held-out articles.

- stock: fastai's `LMDataLoader` over the documents (what `TextDataLoaders(is_lm=True)` builds),
  `language_model_learner(..., pretrained=False)`, fastai's Adam, `fit_one_cycle`, and `to_fp16()`
  on a GPU, as the tutorials write it;
- ulmfit: what `ulmfit pretrain` builds by default: `train.loader: stream` (the batchify kept on
  the device, documents shuffled per epoch), `train.optimizer: torch` (PyTorch's AdamW kernels),
  statistics kept on the device, fp16 autocast with loss scaling that never waits on the GPU, the
  LSTM weights in one cuDNN buffer in fp32, same `fit_one_cycle`;
- bare loop: the same fastai model and stream batches in a plain PyTorch loop (autocast, GradScaler,
  fused AdamW, constant rate, no callbacks): the speed ceiling that ulmfit's overhead is measured against.
`--precision bf16` runs ulmfit and the bare loop in bf16 autocast instead (the issue's bare-loop setting;
the LSTM then still runs in fp16, unscaled: see ulmfit_cli/train/precision.py).

Prints tokens/s of each, the ratios, peak GPU memory and the validation loss each reaches (`--json FILE`:
the same as JSON). `--store DIR` trains on a token store `ulmfit prepare` built (on another machine: no
spaCy needed here); `--paths` runs some of the three, `--also-precisions bf16,fp32` adds ulmfit rows in those
precisions; `--profile N` ends with torch.profiler's summary of N steps of ulmfit's path (the top operators,
and the host-device syncs it counts).
  python bench/train_speed.py                       # CPU, small model (seconds to a minute)
  python bench/train_speed.py --device cuda --emb 400 --hid 1152 --layers 3 --bs 64 --epochs 1
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).parent))

import lm_args  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def bare_loop(dls, model, epochs: int, lr: float, precision: str) -> float:
    """Train `model` on `dls.train` without fastai; return the validation loss."""
    import torch.nn.functional as F
    device = dls.train.device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01,
                            **({"fused": True} if device.type == "cuda" else {"foreach": True}))
    scaler = torch.amp.GradScaler(enabled=precision == "fp16")

    def loss_of(x, y):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x)[0]
        return F.cross_entropy(out.float().reshape(-1, out.shape[-1]), y.reshape(-1))

    model.train()
    for _ in range(epochs):
        model.reset()
        for x, y in dls.train:
            scaler.scale(loss_of(x, y)).backward()
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
    model.eval()
    model.reset()
    with torch.no_grad():
        losses = [(loss_of(x, y) * x.numel(), x.numel()) for x, y in dls.valid]
    return float(sum(v for v, _ in losses) / sum(n for _, n in losses))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    lm_args.add_model_args(ap)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--max-vocab", type=int, default=8000)
    ap.add_argument("--max-docs", type=int, default=None, help="use only the first N articles (quick checks)")
    ap.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default=None,
                    help="ulmfit and bare loop (default: what `run.precision: auto` picks, fp16 on a GPU)")
    ap.add_argument("--store", type=Path, help="a token store to train on (default: prepare the sample here)")
    ap.add_argument("--paths", default="stock,ulmfit,bare", help="which of stock, ulmfit, bare to run")
    ap.add_argument("--also-precisions", default="", help="more ulmfit rows, one per precision (bf16,fp32)")
    ap.add_argument("--json", type=Path, help="also write the rows and ratios here")
    ap.add_argument("--profile", type=int, default=0, help="profile this many steps of ulmfit's path at the end")
    args = ap.parse_args()
    paths = {"stock": "stock fastai", "ulmfit": "ulmfit", "bare": "bare loop"}
    also = [p.strip() for p in args.also_precisions.split(",") if p.strip()]
    chosen = [paths[p.strip()] for p in args.paths.split(",")] + [f"ulmfit {p}" for p in also]

    import prepare_speed
    from fastai.callback.progress import ProgressCallback
    from fastai.metrics import Perplexity, accuracy
    from fastai.text.learner import language_model_learner
    from fastai.text.models.awdlstm import AWD_LSTM
    from fastai.torch_core import set_seed

    from ulmfit_cli.config import LMTrain, PretrainData
    from ulmfit_cli.corpus.prepare import prepare
    from ulmfit_cli.corpus.store import TokenStore
    from ulmfit_cli.train.learners import awd_config, lm_learner
    from ulmfit_cli.train.loaders import as_split, fastai_lm_dls, stream_lm_dls
    from ulmfit_cli.runs import Run

    os.environ.setdefault("CI", "true")  # one line per epoch instead of bars
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.store:
            store = TokenStore.open(args.store)
        else:
            data = PretrainData(source=str(prepare_speed.sample_dump()), cache_dir=str(tmp / "cache"),
                                max_vocab=args.max_vocab, max_docs=args.max_docs,
                                workers=0 if args.max_docs else None)
            store = prepare(data, seed=0)
        docs = {s: [np.asarray(store.tokens(s)[a:b], dtype=np.int64)
                    for a, b in zip(store.offsets(s)[:-1], store.offsets(s)[1:])] for s in ("train", "valid")}
        arch = lm_args.arch(args)
        ulmfit_precision = args.precision or ("fp16" if gpu else "fp32")
        sides = {
            "stock fastai": dict(loader="fastai", optimizer="fastai", precision="fp16" if gpu else "fp32"),
            "ulmfit": dict(loader="stream", optimizer="torch", precision=ulmfit_precision),
            "bare loop": dict(loader="stream", optimizer="torch (constant lr)", precision=ulmfit_precision),
            **{f"ulmfit {p}": dict(loader="stream", optimizer="torch", precision=p) for p in also},
        }
        rows = []
        for name, side in ((n, s) for n, s in sides.items() if n in chosen):
            set_seed(0, reproducible=not gpu)
            if name == "stock fastai":  # as a tutorial writes it
                dls = fastai_lm_dls(as_split(docs["train"]), as_split(docs["valid"]), store.vocab, args.bs, args.bptt,
                                    device)
                learn = language_model_learner(dls, AWD_LSTM, config=awd_config(arch), drop_mult=0.3,
                                               pretrained=False, metrics=[accuracy, Perplexity()],
                                               moms=(0.8, 0.7, 0.8))  # the ULMFiT tutorial's moms
                learn = learn.to_fp16() if gpu else learn
                learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, ProgressCallback)])
                learn.logger = lambda *_: None
            else:  # the same stream batches for ulmfit (what `ulmfit pretrain` builds) and the bare loop
                train = LMTrain(bs=args.bs, bptt=args.bptt, epochs=args.epochs, lr=args.lr)
                offsets = np.cumsum([0] + [len(d) for d in docs["train"]])
                dls = stream_lm_dls(np.concatenate(docs["train"]), np.concatenate(docs["valid"]), store.vocab,
                                    args.bs, args.bptt, device, train_offsets=offsets)
                learn = lm_learner(dls, arch, 0.3, train, side["precision"], Run(tmp), name)
            if gpu:
                torch.cuda.reset_peak_memory_stats()
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            if name == "bare loop":
                valid_loss = bare_loop(dls, learn.model, args.epochs, args.lr, side["precision"])
            else:
                learn.fit_one_cycle(args.epochs, args.lr)
            if gpu:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            tokens = args.epochs * sum(x.numel() for x, _ in dls.train)
            if name != "bare loop":
                with learn.no_bar():
                    valid_loss = float(learn.validate()[0])
            peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GB" if gpu else "n/a (CPU)"
            rows.append((name, side, tokens / seconds, seconds, valid_loss, peak))
            if name == "ulmfit" and args.profile:
                profiled = profile(learn, args.profile, gpu)
    print(f"\ndevice {device} ({torch.cuda.get_device_name() if gpu else f'{os.cpu_count()} CPU cores'}), "
          f"torch {torch.__version__}, AWD-LSTM emb {args.emb} hid {args.hid} layers {args.layers}, "
          f"vocab {len(store.vocab)}, bs {args.bs}, bptt {args.bptt}, {args.epochs} epoch(s), "
          f"{store.stats['train_tokens']:,} train tokens")
    print("| path | loader | optimizer | precision | tokens/s | seconds | valid loss | peak GPU memory |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, side, tps, sec, loss, peak in rows:
        print(f"| {name} | {side['loader']} | {side['optimizer']} | {side['precision']} | {tps:,.0f} | {sec:.1f} "
              f"| {loss:.4f} | {peak} |")
    by = {r[0]: r for r in rows}
    ratios = {}
    if "ulmfit" in by and "stock fastai" in by:
        ratios["ulmfit_over_stock"] = by["ulmfit"][2] / by["stock fastai"][2]
        ratios["valid_loss_ulmfit_over_stock"] = by["ulmfit"][4] / by["stock fastai"][4]
    if "ulmfit" in by and "bare loop" in by:
        ratios["ulmfit_over_bare"] = by["ulmfit"][2] / by["bare loop"][2]
    if len(ratios) == 3:
        print(f"\nspeed ratio ulmfit / stock: {ratios['ulmfit_over_stock']:.2f}x; ulmfit / bare loop: "
              f"{ratios['ulmfit_over_bare']:.2f}; valid loss ratio ulmfit / stock: "
              f"{ratios['valid_loss_ulmfit_over_stock']:.4f}")
    if args.profile and "ulmfit" in by:
        print(f"\ntorch.profiler, {args.profile} steps of ulmfit's path:\n{profiled['table']}\n"
              f"host-device syncs: {profiled['syncs']}")
    if args.json:
        args.json.write_text(json.dumps({
            "device": torch.cuda.get_device_name() if gpu else f"{os.cpu_count()} CPU cores",
            "torch": torch.__version__,
            "arch": arch, "bs": args.bs, "bptt": args.bptt, "epochs": args.epochs, "vocab": len(store.vocab),
            "train_tokens": store.stats["train_tokens"],
            "rows": [{"path": n, **side, "tokens_per_s": tps, "seconds": sec,
                      "valid_loss": loss, "peak_gpu_memory": peak} for n, side, tps, sec, loss, peak in rows],
            "ratios": ratios, **({"profile": profiled} if args.profile and "ulmfit" in by else {})}, indent=1))


def profile(learn, steps: int, gpu: bool) -> dict:
    """torch.profiler over `steps` training steps of `learn` (one more fit, cut short): the operators that
    took the most time, and how often the host waited for the device (synchronizations, copies to host)."""
    from fastai.callback.core import Callback, CancelFitException
    from torch.profiler import ProfilerActivity

    class Stop(Callback):
        def after_step(self):
            if self.iter + 1 >= steps:
                raise CancelFitException()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with torch.profiler.profile(activities=activities) as prof:
        learn.fit(1, cbs=[Stop()])
        if gpu:
            torch.cuda.synchronize()
    events = prof.key_averages()
    sort = "self_cuda_time_total" if gpu else "self_cpu_time_total"
    syncs = {e.key: e.count for e in events
             if any(k in e.key for k in ("Synchronize", "item", "_local_scalar_dense", "Memcpy DtoH", "to_copy"))}
    return {"table": events.table(sort_by=sort, row_limit=15), "syncs": syncs}


if __name__ == "__main__":
    main()
