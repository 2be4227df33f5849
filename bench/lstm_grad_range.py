"""How much of AWD-LSTM's LSTM gradients float16 can hold, with and without loss scaling.

Under any CUDA autocast, bf16 included, PyTorch runs cuDNN's LSTM in float16 (its `_cudnn_rnn`
autocast wrapper casts to half), so the LSTM's weight and input gradients are float16 values. This
takes one forward/backward of the model in fp32 on random tokens, at initialisation, and reports
which share of those gradients float16 would flush to zero (below 2**-24) or keep only as subnormals
(below 2**-14): unscaled, as under bf16 autocast, and multiplied by GradScaler's initial scale
(2**16), as under fp16 with loss scaling. That is why `run.precision: auto` is fp16 on a GPU.

  python bench/lstm_grad_range.py                      # the default model, bs 256 x 72 (about a minute on CPU)
  python bench/lstm_grad_range.py --bs 64 --vocab 8000
"""
from __future__ import annotations

import argparse
import warnings

import lm_args
import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")

SMALLEST_SUBNORMAL, SMALLEST_NORMAL = 2.0 ** -24, 2.0 ** -14


def shares(grads: list[torch.Tensor], scale: float) -> tuple[float, float]:
    """(share flushed to zero, share subnormal) of the non-zero gradient entries, times `scale`."""
    a = torch.cat([g.abs().flatten() for g in grads]) * scale
    a = a[a > 0]
    zero = (a < SMALLEST_SUBNORMAL / 2).float().mean().item()  # rounds to 0 in float16
    return zero, (a < SMALLEST_NORMAL).float().mean().item() - zero


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    lm_args.add_model_args(ap, emb=400, hid=1152, layers=3, bs=256)  # the default model, the batch
    ap.add_argument("--vocab", type=int, default=60000)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = lm_args.language_model(args, args.vocab).to(args.device).train()
    model.reset()
    inputs_grads: list[torch.Tensor] = []
    for rnn in model[0].rnns:  # the gradient arriving at each LSTM's output: cuDNN's dy
        rnn.register_forward_hook(lambda _m, _i, out: out[0].register_hook(inputs_grads.append) and None)
    x, y = (torch.randint(0, args.vocab, (args.bs, args.bptt), device=args.device) for _ in range(2))
    out = model(x)[0]
    F.cross_entropy(out.reshape(-1, args.vocab), y.reshape(-1)).backward()
    weight_grads = [p.grad for n, p in model.named_parameters() if ".rnns." in n and p.grad is not None]

    print(f"AWD-LSTM emb {args.emb} hid {args.hid} layers {args.layers}, vocab {args.vocab}, "
          f"bs {args.bs} x bptt {args.bptt}, at initialisation, torch {torch.__version__}")
    print("| LSTM gradients | loss scale | flushed to zero in fp16 | fp16 subnormal (imprecise) |")
    print("| --- | --- | --- | --- |")
    for what, grads in (("weights", weight_grads), ("outputs (dy)", inputs_grads)):
        for label, scale in (("none (bf16 autocast)", 1.0), ("2^16 (fp16 + GradScaler)", 2.0 ** 16)):
            zero, sub = shares(grads, scale)
            print(f"| {what} | {label} | {zero:.1%} | {sub:.1%} |")


if __name__ == "__main__":
    main()
