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


def model_is_stock(name: str) -> bool:
    return name.startswith("fastai")


def main() -> None:
    from fastai.text.models.awdlstm import AWD_LSTM
    from fastai.text.models.core import get_language_model

    from ulmfit_cli.learners import awd_config
    from ulmfit_cli.weight_dropout import flatten_weight_dropout
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--emb", type=int, default=64)
    ap.add_argument("--hid", type=int, default=192)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--bptt", type=int, default=72)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    device = torch.device(args.device)
    config = awd_config({"emb_sz": args.emb, "n_hid": args.hid, "n_layers": args.layers})
    gen = torch.Generator().manual_seed(0)
    batches = [tuple(torch.randint(0, args.vocab, (args.bs, args.bptt), generator=gen).to(device) for _ in range(2))
               for _ in range(args.steps + 2)]
    torch.manual_seed(0)
    stock = get_language_model(AWD_LSTM, args.vocab, config=config).to(device)
    flat = flatten_weight_dropout(get_language_model(AWD_LSTM, args.vocab, config=config)).to(device)
    flat.load_state_dict(stock.state_dict())
    rows = []
    for name, model in (("fastai WeightDropout", stock), ("FlatWeightDropout", flat)):
        torch.manual_seed(1)
        rows.append((name, *run(model, batches, device)))
    print(f"device {device}, torch {torch.__version__}, fp32, AWD-LSTM emb {args.emb} hid {args.hid} "
          f"layers {args.layers}, vocab {args.vocab}, bs {args.bs}, bptt {args.bptt}, {args.steps} timed steps")
    print("| LSTM weights | steps/s | cuDNN non-contiguous warning | final loss |")
    print("| --- | --- | --- | --- |")
    for name, sps, loss, warned in rows:
        said = "silenced by fastai" if model_is_stock(name) else ("yes" if warned else "no")
        print(f"| {name} | {sps:.2f} | {said} | {loss:.4f} |")
    print(f"\nspeed ratio flat / fastai: {rows[1][1] / rows[0][1]:.3f}")


if __name__ == "__main__":
    main()
