"""fp32 AWD-LSTM steps: fastai's WeightDropout against FlatWeightDropout (one cuDNN weight buffer).

Trains the same AWD-LSTM language model (same weights, same batches, same seed) twice in fp32 with a
plain PyTorch loop, once with fastai's `WeightDropout` and once with `FlatWeightDropout`, and prints
steps/s, the ratio, whether cuDNN warned about non-contiguous weights (fastai's WeightDropout silences
its own warning, so only the flat path's can show), and the final loss of each.
On the CPU both take fastai's path (the CPU LSTM has no weight buffer), so the ratio is ~1 there.

  python bench/weight_dropout_speed.py --device cuda --emb 400 --hid 1152 --layers 3 --bs 64
"""
from __future__ import annotations

import argparse
import time
import warnings

import lm_args
import torch
import torch.nn.functional as F


def run(model, batches, device) -> tuple[float, float, bool]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    model.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, (x, y) in enumerate(batches):
            if i == 2:  # after warm-up (cuDNN plans, allocator)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            out = model(x)[0]
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
    warned = any("contiguous chunk" in str(w.message) for w in caught)
    return (len(batches) - 2) / (time.perf_counter() - t0), loss.item(), warned


def main() -> None:
    from ulmfit_cli.train.weight_dropout import flatten_weight_dropout
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    lm_args.add_model_args(ap)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    batches = [tuple(torch.randint(0, args.vocab, (args.bs, args.bptt), generator=gen).to(device) for _ in range(2))
               for _ in range(args.steps + 2)]
    torch.manual_seed(0)
    stock = lm_args.language_model(args, args.vocab).to(device)
    flat = flatten_weight_dropout(lm_args.language_model(args, args.vocab)).to(device)
    flat.load_state_dict(stock.state_dict())
    rows = []
    for name, model, warning in (("fastai WeightDropout", stock, "silenced by fastai"), ("FlatWeightDropout", flat, None)):
        torch.manual_seed(1)
        sps, loss, warned = run(model, batches, device)
        rows.append((name, sps, loss, warning or ("yes" if warned else "no")))
    print(f"device {device}, torch {torch.__version__}, fp32, AWD-LSTM emb {args.emb} hid {args.hid} "
          f"layers {args.layers}, vocab {args.vocab}, bs {args.bs}, bptt {args.bptt}, {args.steps} timed steps")
    print("| LSTM weights | steps/s | cuDNN non-contiguous warning | final loss |")
    print("| --- | --- | --- | --- |")
    for name, sps, loss, warning in rows:
        print(f"| {name} | {sps:.2f} | {warning} | {loss:.4f} |")
    print(f"\nspeed ratio flat / fastai: {rows[1][1] / rows[0][1]:.3f}")


if __name__ == "__main__":
    main()
