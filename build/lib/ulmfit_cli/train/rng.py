"""The process-wide random states (Python, NumPy, torch, CUDA) as one stateful object for checkpoints."""
from __future__ import annotations

import random

import numpy as np
import torch


class GlobalRNG:
    """`state_dict`/`load_state_dict` of every global random generator that training draws from."""

    @staticmethod
    def state_dict() -> dict:
        legacy = np.random.get_state()
        state = {"python": random.getstate(), "torch": torch.get_rng_state(),
                 "numpy": [legacy[0], torch.from_numpy(legacy[1].astype(np.int64)), *legacy[2:]]}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def load_state_dict(state: dict) -> None:
        random.setstate(state["python"])
        torch.set_rng_state(state["torch"])
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
