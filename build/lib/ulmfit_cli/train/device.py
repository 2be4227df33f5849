"""The device and precision decision (made once, by `ulmfit_cli.resolve`, and recorded in config.yaml),
and what every training stage does before it reads data: CPU threads, seeds and deterministic algorithms."""
from __future__ import annotations

import os

import torch
from fastai.torch_core import set_seed

from ulmfit_cli.console import info
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.ranks import world

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def decide(device: str, precision: str, key: str = "run") -> tuple[str, str]:
    """What `device` and `precision` (as asked, `auto` allowed) will be here: ('cpu' | 'cuda', 'fp32' | ...).

    `auto` precision is fp16 with loss scaling on a GPU (bf16 would leave the LSTM's fp16 gradients
    unscaled: ulmfit_cli/train/precision.py), fp32 on the CPU. `key` names the option in errors.
    """
    dev, prec = (f"{key}.device", f"{key}.precision") if key == "run" else ("--device", "--precision")
    if device not in DEVICES:
        raise UlmfitError(f"{dev}: expected {', '.join(DEVICES)}, got {device!r}")
    if precision not in PRECISIONS:
        raise UlmfitError(f"{prec}: expected {', '.join(PRECISIONS)}, got {precision!r}")
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise UlmfitError(f"{dev}: cuda was asked for, but PyTorch sees no CUDA GPU here")
    device = "cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu"
    if precision == "auto":
        precision = "fp16" if device == "cuda" else "fp32"
    if device == "cpu" and precision != "fp32":
        # fastai's MixedPrecision autocasts on CUDA only; on CPU it would silently train in fp32.
        raise UlmfitError(f"{prec}: {precision} needs a CUDA GPU (this run is on the CPU); use {prec}=fp32")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise UlmfitError(f"{prec}: bf16 is not supported by this GPU; use fp16")
    return device, precision


def torch_device(device: str) -> torch.device:
    """The torch device of a decided `device`: this process's GPU in a multi-process run."""
    if device == "cuda" and world().active:
        return torch.device("cuda", world().local_rank)
    return torch.device(device)


def start(run) -> torch.device:
    """Seeds and deterministic algorithms for a resolved `run` section, before any data is read or loader
    built; returns the device.

    `run.deterministic` turns on PyTorch's deterministic algorithms; cuBLAS needs its workspace
    setting before the first CUDA call, so it is set here first.
    """
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    if run.device == "cpu":  # oversubscribed cores spin instead of working: say how many threads run
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        info(f"cpu: {torch.get_num_threads()} PyTorch threads on {cores} cores"
             + ("" if run.threads else " (run.threads; 1 is faster on a machine busy with other jobs)"))
    if run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    # fastai's `reproducible` also turns off cuDNN's autotuner: only when asked for
    # (CPU runs are exact anyway)
    set_seed(run.seed, reproducible=run.deterministic)
    return torch_device(run.device)
