"""Training on several processes (one per GPU, or CPU processes) with PyTorch's DistributedDataParallel.

Launch with the standard launchers, which set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR:

    torchrun --nproc_per_node 8 -m ulmfit_cli pretrain --config ...

A run under a launcher with WORLD_SIZE > 1 is distributed (`run.distributed: auto`; `off`
ignores the launcher): NCCL on GPUs (each process on `cuda:LOCAL_RANK`), Gloo on CPU.
`train.bs` stays the global batch: each of N processes trains bs / N of its rows, so a config
trains the same model on 1 or N processes without rescaling the learning rate, every token of
the LM stream is seen once per epoch, and a checkpoint resumes on any N that divides bs.
Rank 0 alone writes the run dir and prints; every rank validates on the whole validation set,
so no sample is counted twice. Collectives time out after `run.dist_timeout` seconds: when a
process dies the others fail instead of waiting forever (torchrun also stops them at once).
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ulmfit_cli.console import info
from ulmfit_cli.errors import UlmfitError
# (is_main: the engine asks here too)
from ulmfit_cli.ranks import World, is_main, set_world, world  # noqa: F401


def launched() -> bool:
    """Started by torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(run_cfg) -> World:
    """Join the process group the launcher describes (once per process)."""
    if run_cfg.distributed == "off" or not launched() or world().active:
        return world()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and run_cfg.device != "cpu"
    if cuda:
        torch.cuda.set_device(gpu_of(local_rank, torch.cuda.device_count()))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=run_cfg.dist_timeout))
    set_world(World(dist.get_rank(), dist.get_world_size(), local_rank))
    info(f"distributed: {world().size} processes ({dist.get_backend()}); train.bs is the global batch")
    return world()


def gpu_of(local_rank: int, n_gpus: int) -> int:
    """A process's GPU: its LOCAL_RANK. More processes than GPUs on a machine is refused before NCCL would
    fail on it (NCCL cannot give two ranks one GPU; CUDA would say only 'invalid device ordinal')."""
    if local_rank >= n_gpus:
        raise UlmfitError(f"distributed: process {local_rank} on this machine has no GPU of its own "
                          f"({n_gpus} GPU(s) here): NCCL needs one GPU per process. Start at most {n_gpus} per "
                          f"machine (torchrun --nproc_per_node {n_gpus}), or set run.device=cpu to train with Gloo")
    return local_rank


def teardown() -> None:
    if world().active and dist.is_initialized():
        dist.destroy_process_group()
    set_world(World())


def from_main(compute):
    """`compute()` on rank 0 only; every rank returns rank 0's result (e.g. tokenized texts).

    An error on rank 0 (bad input) is raised on every rank with the same message.
    """
    if not world().active:
        return compute()
    box = [None]
    if world().main:
        try:
            box = [("ok", compute())]
        except UlmfitError as e:
            box = [("error", str(e))]
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise UlmfitError(value)
    return value


def local_rows(bs: int, what: str = "train.bs") -> slice:
    """The rows of a global batch of `bs` that this process trains."""
    if bs % world().size:
        raise UlmfitError(f"{what}={bs} is the global batch size and must divide evenly between the "
                          f"{world().size} processes (e.g. {bs - bs % world().size or world().size})")
    n = bs // world().size
    return slice(world().rank * n, (world().rank + 1) * n)


def gather_rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Concatenate each rank's `t` along `dim` in rank order (all ranks get the result)."""
    if not world().active:
        return t
    parts = [torch.empty_like(t) for _ in range(world().size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim)


class _DDP(DistributedDataParallel):
    """DDP that still looks like fastai's SequentialRNN to callbacks (`reset`, `[0]`)."""

    def reset(self):
        if hasattr(self.module, "reset"):
            self.module.reset()

    def __getitem__(self, i):
        return self.module[i]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class ShardedDL:
    """Every N-th batch of a fastai DataLoader for this rank; all ranks draw the same order from a
    per-epoch seed and train the same number of batches (DDP needs equal steps)."""

    def __init__(self, dl, seed: int):
        self.dl, self.seed, self.epochs_done = dl, seed, 0

    def __len__(self) -> int:
        return len(self.dl) // world().size

    def __iter__(self):
        import numpy as np
        np.random.seed((self.seed + self.epochs_done) % 2**32)  # fastai's SortedDL shuffles with NumPy
        self.dl.rng.seed(self.seed + self.epochs_done)
        n = len(self)
        for i, batch in enumerate(self.dl):
            if i >= n * world().size:
                break
            if i % world().size == world().rank:
                yield batch
        self.epochs_done += 1

    def state_dict(self) -> dict:
        return {"epochs_done": self.epochs_done}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_done = state.get("epochs_done", 0)

    def __getattr__(self, name):
        return getattr(self.dl, name)


def ddp_callback():
    """A fastai callback that trains through DDP during each fit (made lazily: fastai imports)."""
    from fastai.callback.core import Callback

    class DistributedTraining(Callback):
        order = 56  # after the Checkpointer (55) has loaded a resumed state into the plain model

        def before_fit(self):
            device = next(self.learn.model.parameters()).device
            ids = [device.index] if device.type == "cuda" else None
            self.learn.model = _DDP(unwrap(self.learn.model), device_ids=ids)

        def after_fit(self):
            self.learn.model = unwrap(self.learn.model)

    return DistributedTraining()
