"""Run directories: create (or refuse), write atomically, publish only when a stage succeeds,
and read an upstream run back safely (YAML, JSON and weights-only tensors, never pickle).

A stage writes into a hidden staging folder next to the run (`runs/.NAME.partial`) and
renames it into place at the end, so a failed or killed run never changes a finished one,
even under `--force`. A lock beside the run dir (`runs/.NAME.lock`) keeps a second command out of it
while the first one runs: the staging folder has one owner.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ulmfit_cli.config import ARCH_KEYS, META_KEY, REQUESTED, StageConfig, to_yaml, validate
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import (atomic_write, load_weights, read_token_json, reads, staged, staging_dir,
                              write_json)
from ulmfit_cli.layout import (CHECKPOINTS, CONFIG, LAST_CHECKPOINT, METRICS, PAIR, VOCAB, __version__,
                               sp_model_in)
from ulmfit_cli.ranks import is_main


@dataclass
class Run:
    """The run being written. `path` is the staging folder until the stage finishes."""
    path: Path
    resume: bool = False  # continue from path/checkpoints/last.pt

    @property
    def writes(self) -> bool:
        """Rank 0 alone writes the run dir of a multi-process run."""
        return is_main()

    def write_json(self, name: str, obj) -> None:
        if self.writes:
            write_json(self.path / name, obj)

    def save_weights(self, name: str, state_dict: dict) -> None:
        if not self.writes:
            return
        state = {k: v.detach().cpu() for k, v in state_dict.items()}
        atomic_write(self.path / name, lambda f: torch.save(state, f))

    def copy_in(self, src: Path | None, name: str) -> None:
        """Copy a file the run depends on (a tokenizer model) into the run dir."""
        if src is not None and self.writes:
            shutil.copyfile(src, self.path / name)

    def log_metrics(self, record: dict) -> None:
        if not self.writes:
            return
        with open(self.path / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def checkpoint_of(folder: Path) -> Path | None:
    last = folder / CHECKPOINTS / LAST_CHECKPOINT
    return last if last.is_file() else None


def refuse_pair(final: Path) -> None:
    """A pair's members hold the checkpoints: it resumes as a pair, not as one run."""
    if any((folder / PAIR).is_file() for folder in (staging_dir(final), final)):
        raise UlmfitError(f"--resume: {final} is a forward+backward pair; resume it with --directions both")


def resume_config(final: Path) -> Path:
    """The config.yaml of the run `--resume` continues (the unfinished one first)."""
    refuse_pair(final)
    for folder in (staging_dir(final), final):
        if checkpoint_of(folder) and (folder / CONFIG).is_file():
            return folder / CONFIG
    raise UlmfitError(f"--resume: no checkpoint to resume in {staging_dir(final)} or {final} "
                      f"(checkpoints/last.pt is written at the end of each epoch)")


@contextmanager
def open_run(stage: str, cfg: StageConfig, requested: dict, force: bool, resume: bool = False,
             meta: dict | None = None):
    """Yield a `Run` writing into a staging folder (`files.staged`); publish it as `cfg.run.dir` on success.

    The run dir is locked for the whole block: a second command on it is refused, naming this one's PID.
    With `resume`, the staging folder of a killed run is continued, or a finished run is copied into a new
    staging folder (so it stays untouched until the resumed run finishes); a failure after a checkpoint
    keeps the staging folder for `--resume`. config.yaml is written first: the resolved config, with
    `requested` (the values the user asked for before they were resolved, run.device: auto) and `meta`
    (e.g. where an imported model came from) under `_meta`.
    """
    final = Path(cfg.run.dir)
    if resume:
        refuse_pair(final)
    with staged(final, f"run dir {final}", force, resume, resumable=lambda f: checkpoint_of(f) is not None,
                kept_message=True) as staging:
        run = Run(path=staging, resume=resume)
        meta = {"stage": stage, "version": __version__, "argv": sys.argv,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **({REQUESTED: requested} if requested else {}), **(meta or {})}
        config = to_yaml(cfg, meta).encode()
        atomic_write(staging / CONFIG, lambda f: f.write(config))
        yield run
    run.path = final


# ---------------------------------------------------------------- reading an upstream run
@dataclass
class UpstreamRun:
    path: Path
    stage: str
    config: dict
    vocab: list[str]

    def arch(self) -> dict:
        model = self.config.get("model", {})
        return {k: model.get(k) for k in ARCH_KEYS}

    def weights(self, name: str) -> dict:
        return load_weights(self.path / name)

    def typed(self, cls: type[StageConfig]) -> StageConfig:
        """The run's config.yaml as its stage's typed config (checked as a config file is)."""
        where = str(self.path / CONFIG)
        return validate(cls, {k: v for k, v in self.config.items() if k != META_KEY}, where, source=where)

    @property
    def backwards(self) -> bool:
        return bool((self.config.get("data") or {}).get("backwards", False))

    @property
    def lang(self) -> str:
        """The word tokenizer's language (runs made before data.lang existed are English)."""
        return (self.config.get("data") or {}).get("lang") or "en"

    @property
    def sp_model(self) -> Path | None:
        return sp_model_in(self.path)

    @property
    def extra_text(self) -> list[str]:
        """The unlabelled target-domain files a finetune-lm run read (its data.extra_text)."""
        return list((self.config.get("data") or {}).get("extra_text") or [])


def _run_config(path: Path, key: str) -> dict | None:
    cfg_file = path / CONFIG
    if not cfg_file.is_file():
        return None
    try:
        config = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UlmfitError(f"{key}: {cfg_file} is not readable YAML: {e}") from None
    return config if isinstance(config, dict) else {}


def stage_of(path: Path, key: str = "--model") -> str | None:
    """The stage that wrote the run at `path` (None: not a run dir, e.g. a classifier bundle)."""
    config = _run_config(Path(path), key) if Path(path).is_dir() else None
    meta = (config or {}).get(META_KEY)
    return meta.get("stage") if isinstance(meta, dict) else None


def read_run(path: Path | str, key: str, stages: tuple[str, ...], weights: str) -> UpstreamRun:
    """Open a finished run for reading; `key` names the config key or option that pointed here."""
    path = Path(path)
    reads(path, key)
    if not path.is_dir():
        raise UlmfitError(f"{key}: {path} is not a directory")
    if (path / PAIR).is_file():
        raise UlmfitError(f"{key}: {path} is a forward+backward pair ({path / 'fwd'}, {path / 'bwd'}): train "
                          f"both directions from it with --directions both, or name one of them")
    config = _run_config(path, key)
    if config is None:
        raise UlmfitError(f"{key}: {path} is not a ulmfit run (no config.yaml)")
    stage = stage_of(path, key)
    if stage not in stages:
        raise UlmfitError(f"{key}: {path} is a {stage or 'unknown'} run; expected one of: "
                          f"{', '.join(stages)}")
    for name in (VOCAB, weights):
        if not (path / name).is_file():
            raise UlmfitError(f"{key}: {path} has no {name} (an unfinished run?)")
    return UpstreamRun(path=path, stage=stage, config=config, vocab=read_vocab(path, key))


def read_vocab(folder: Path, key: str) -> list[str]:
    return read_token_json(folder / VOCAB, key)
