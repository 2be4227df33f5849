"""The forward+backward pair format (`--directions both`): a run dir or bundle holding a forward and a
backward model (`fwd/`, `bwd/`) and `directions.json`, which inference takes as one ensemble. Training a
pair is `ulmfit_cli.recipes.forward_backward`; reading one is here, below both."""
from __future__ import annotations

from pathlib import Path

from ulmfit_cli.layout import MEMBERS, PAIR


def is_pair(path: Path) -> bool:
    return (Path(path) / PAIR).is_file()


def members(path: Path) -> list[Path] | None:
    """The member dirs of a pair run dir or bundle (forward first), or None for a single model."""
    path = Path(path)
    if not is_pair(path):
        return None
    return [path / name for name, _ in MEMBERS]
