"""Which process of a multi-process run this is: the one owner of "rank 0 alone writes and speaks".

`train.distributed` joins the process group and records the result here (`set_world`); console output,
run dirs and checkpoints ask `is_main()`. Kept below both, and free of torch, so that asking costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


_world = World()


def world() -> World:
    return _world


def set_world(new: World) -> None:
    global _world
    _world = new


def is_main() -> bool:
    """Whether this process is rank 0, which alone writes run dirs and prints (always, outside a
    multi-process run)."""
    return _world.main
