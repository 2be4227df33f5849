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

import yaml

from ulmfit_cli.config import ARCH_KEYS, META_KEY, REQUESTED, StageConfig, to_yaml
from ulmfit_cli.errors import Abandoned, UlmfitError
from ulmfit_cli.files import (atomic_write, exclusive, load_weights, publish, read_token_json, staging_dir,
                              write_json)
from ulmfit_cli.version import __version__


PAIR_FILE = "directions.json"  # marks a forward+backward pair (`--directions both`): members fwd/ and bwd/


@dataclass
class Run:
    """The run being written. `path` is the staging folder until the stage finishes."""
    path: Path
    resume: bool = False  # continue from path/checkpoints/last.pt

    @property
    def writes(self) -> bool:
        """Rank 0 alone writes the run dir of a multi-process run."""
        from ulmfit_cli.train.distributed import is_main
        return is_main()

    def write_json(self, name: str, obj) -> None:
        if self.writes:
            write_json(self.path / name, obj)

    def save_weights(self, name: str, state_dict: dict) -> None:
        if not self.writes:
            return
        import torch  # late: keeps `ulmfit --help` fast
        state = {k: v.detach().cpu() for k, v in state_dict.items()}
        atomic_write(self.path / name, lambda f: torch.save(state, f))

    def copy_in(self, src: Path | None, name: str) -> None:
        """Copy a file the run depends on (a tokenizer model) into the run dir."""
        if src is not None and self.writes:
            shutil.copyfile(src, self.path / name)

    def log_metrics(self, record: dict) -> None:
        if not self.writes:
            return
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def checkpoint_of(folder: Path) -> Path | None:
    last = folder / "checkpoints" / "last.pt"
    return last if last.is_file() else None


def resume_config(final: Path) -> Path:
    """The config.yaml of the run `--resume` continues (the unfinished one first)."""
    for folder in (staging_dir(final), final):
        if checkpoint_of(folder) and (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise UlmfitError(f"--resume: no checkpoint to resume in {staging_dir(final)} or {final} "
                      f"(checkpoints/last.pt is written at the end of each epoch)")


@contextmanager
def open_run(stage: str, cfg: StageConfig, requested: dict, force: bool, resume: bool = False,
             meta: dict | None = None):
    """Yield a `Run` writing into a staging folder; publish it as `final` on success.

    The run dir is locked for the whole block: a second command on it is refused, naming this one's PID.
    With `resume`, the staging folder of a killed run is continued, or a finished run is copied
    into a new staging folder (so it stays untouched until the resumed run finishes). `requested`: the
    values the user asked for before they were resolved (run.device: auto), kept in config.yaml's `_meta`
    with `meta` (e.g. where an imported model came from).
    """
    final = Path(cfg.run.dir)
    with exclusive(final, f"run dir {final}"), _staged(stage, cfg, requested, force, resume, final, meta) as run:
        yield run


@contextmanager
def _staged(stage: str, cfg: StageConfig, requested: dict, force: bool, resume: bool, final: Path,
            extra: dict | None):
    if final.exists() and not final.is_dir():
        raise UlmfitError(f"run dir {final} exists and is not a directory")
    staging = staging_dir(final)
    copied = False  # a finished run copied into staging to be continued
    if resume:
        if checkpoint_of(staging) is None:
            if checkpoint_of(final) is None:
                resume_config(final)  # raises: nothing to resume
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(final, staging)
            copied = True
    else:
        if final.is_dir() and any(final.iterdir()) and not force:
            raise UlmfitError(f"run dir {final} is not empty: pass --force to replace it "
                              f"(it is kept until the new run finishes), or choose another --run-dir")
        if checkpoint_of(staging) is not None and not force:
            raise UlmfitError(f"{staging} holds an unfinished run with checkpoints: pass --resume to continue it, "
                              f"or --force to discard it")
        if staging.exists():
            shutil.rmtree(staging)  # left by a crashed run without checkpoints (or --force)
        staging.mkdir(parents=True)
    run = Run(path=staging, resume=resume)
    meta = {"stage": stage, "version": __version__, "argv": sys.argv, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **({REQUESTED: requested} if requested else {}), **(extra or {})}
    config = to_yaml(cfg, meta).encode()
    atomic_write(staging / "config.yaml", lambda f: f.write(config))
    try:
        yield run
    except Abandoned:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except UlmfitError:
        if copied or checkpoint_of(staging) is None:
            shutil.rmtree(staging, ignore_errors=True)  # bad input before any training (or a refused
            # continuation of a finished run, which is still whole): leave no trace
        raise
    except BaseException:
        how = "resume it with --resume" if checkpoint_of(staging) else "it has no checkpoint yet"
        print(f"ulmfit: the unfinished run is kept in {staging} ({how}); {final} is unchanged", file=sys.stderr)
        raise
    publish(staging, final)
    run.path = final


# ---------------------------------------------------------------- reading an upstream run
LM_STAGES = ("pretrain", "finetune-lm")
UPSTREAM_WEIGHTS = {"finetune-lm": "lm.pth", "train-clf": "encoder.pth"}  # what each stage loads


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
        from ulmfit_cli.config import validate
        where = str(self.path / "config.yaml")
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
        from ulmfit_cli.corpus.tokenize import sp_model_in  # late: fastai
        return sp_model_in(self.path)


def _run_config(path: Path, key: str) -> dict | None:
    cfg_file = path / "config.yaml"
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
    if not path.is_dir():
        raise UlmfitError(f"{key}: {path} is not a directory")
    if (path / PAIR_FILE).is_file():
        raise UlmfitError(f"{key}: {path} is a forward+backward pair ({path / 'fwd'}, {path / 'bwd'}): train both "
                          f"directions from it with --directions both, or name one of them")
    config = _run_config(path, key)
    if config is None:
        raise UlmfitError(f"{key}: {path} is not a ulmfit run (no config.yaml)")
    stage = stage_of(path, key)
    if stage not in stages:
        raise UlmfitError(f"{key}: {path} is a {stage or 'unknown'} run; expected one of: {', '.join(stages)}")
    for name in ("vocab.json", weights):
        if not (path / name).is_file():
            raise UlmfitError(f"{key}: {path} has no {name} (an unfinished run?)")
    return UpstreamRun(path=path, stage=stage, config=config, vocab=read_vocab(path, key))


def read_vocab(folder: Path, key: str) -> list[str]:
    return read_token_json(folder / "vocab.json", key)
