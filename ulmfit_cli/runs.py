"""Run directories: create (or refuse), write atomically, publish only when a stage succeeds,
and read an upstream run back safely (YAML, JSON and weights-only tensors, never pickle).

A stage writes into a hidden staging folder next to the run (`runs/.NAME.partial`) and
renames it into place at the end, so a failed or killed run never changes a finished one,
even under `--force`.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from ulmfit_cli import __version__
from ulmfit_cli.config import META_KEY, Arch, PretrainModel, StageConfig, to_yaml
from ulmfit_cli.errors import UlmfitError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """`write(f)` into a temporary file beside `path`, fsync, rename: `path` is always the old file
    or the new one, whole, whenever the process dies."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_json(path: Path, obj) -> None:
    data = (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def torch_load_safe(path: Path, refused: str):
    """`torch.load` with `weights_only=True`; a file it refuses (a pickle that would run code, a broken
    file) becomes an UlmfitError `refused (reason)`."""
    import pickle

    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UlmfitError(f"{refused} ({first})") from None


@dataclass
class Run:
    """The run being written. `path` is the staging folder until the stage finishes."""
    path: Path
    final: Path
    stage: str
    resume: bool = False  # continue from path/checkpoints/last.pt
    writes: bool = True   # False on the other ranks of a multi-process run: rank 0 writes the run dir

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


def resolve_run_dir(cfg: StageConfig, run_dir: Path | None) -> Path:
    if run_dir is not None:
        cfg.run.dir = str(run_dir)
    elif cfg.run.dir is None:
        cfg.run.dir = str(Path("runs") / cfg.run.name)
    return Path(cfg.run.dir)


def staging_dir(final: Path) -> Path:
    return final.parent / f".{final.name}.partial"


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
def open_run(stage: str, cfg: StageConfig, final: Path, force: bool, resume: bool = False):
    """Yield a `Run` writing into a staging folder; publish it as `final` on success.

    With `resume`, the staging folder of a killed run is continued, or a finished run is copied
    into a new staging folder (so it stays untouched until the resumed run finishes).
    """
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
    run = Run(path=staging, final=final, stage=stage, resume=resume)
    meta = {"stage": stage, "version": __version__, "argv": sys.argv,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    config = to_yaml(cfg, meta).encode()
    atomic_write(staging / "config.yaml", lambda f: f.write(config))
    try:
        yield run
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


def publish(staging: Path, final: Path) -> None:
    """Rename a finished staging folder to `final`. A previous `final` (folder or file) is moved aside
    first and removed after, so at every moment one of the two is whole."""
    if not final.exists():
        os.replace(staging, final)
        return
    old = final.parent / f".{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old) if old.is_dir() else old.unlink()


# ---------------------------------------------------------------- reading an upstream run
ARCH_KEYS = ("emb_sz", "n_hid", "n_layers")
PAPER_ARCH = PretrainModel().model_dump(include=set(ARCH_KEYS))  # the pretrain defaults: the paper's sizes
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

    @property
    def backwards(self) -> bool:
        return bool((self.config.get("data") or {}).get("backwards", False))

    @property
    def sp_model(self) -> Path | None:
        from ulmfit_cli.corpus.tokenize import sp_model_in  # late: fastai
        return sp_model_in(self.path)


def read_run(path: Path | str, key: str, stages: tuple[str, ...], weights: str) -> UpstreamRun:
    """Open a finished run for reading; `key` names the config key or option that pointed here."""
    path = Path(path)
    if not path.is_dir():
        raise UlmfitError(f"{key}: {path} is not a directory")
    cfg_file = path / "config.yaml"
    if not cfg_file.is_file():
        raise UlmfitError(f"{key}: {path} is not a ulmfit run (no config.yaml)")
    try:
        config = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UlmfitError(f"{key}: {cfg_file} is not readable YAML: {e}") from None
    stage = (config or {}).get(META_KEY, {}).get("stage") if isinstance(config, dict) else None
    if stage not in stages:
        raise UlmfitError(f"{key}: {path} is a {stage or 'unknown'} run; expected one of: {', '.join(stages)}")
    for name in ("vocab.json", weights):
        if not (path / name).is_file():
            raise UlmfitError(f"{key}: {path} has no {name} (an unfinished run?)")
    return UpstreamRun(path=path, stage=stage, config=config, vocab=read_vocab(path, key))


def read_vocab(folder: Path, key: str) -> list[str]:
    vocab = read_json(folder / "vocab.json", key)
    if not (isinstance(vocab, list) and vocab and all(isinstance(t, str) for t in vocab)):
        raise UlmfitError(f"{key}: {folder / 'vocab.json'} is not a JSON list of tokens")
    return vocab


def read_json(path: Path, key: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UlmfitError(f"{key}: {path} is not valid JSON: {e}") from None


def load_weights(path: Path) -> dict:
    """A plain state dict, loaded with `weights_only=True`: a pickle that would run code is refused."""
    import torch
    state = torch_load_safe(path, f"{path}: not a weights-only state dict, refused to load it")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UlmfitError(f"{path}: expected a state dict of tensors")
    return state


def upstream_of(stage: str, cfg: StageConfig) -> UpstreamRun | None:
    """The run `init.from_run` names (checked to be a finished LM run), or None."""
    init = getattr(cfg, "init", None)
    if init is None or not init.from_run:
        return None
    upstream = read_run(init.from_run, "init.from_run", LM_STAGES, UPSTREAM_WEIGHTS[stage])
    if upstream.backwards != cfg.data.backwards:
        direction = lambda b: "backwards (reversed text)" if b else "forwards"  # noqa: E731
        raise UlmfitError(f"init.from_run: {upstream.path} was trained {direction(upstream.backwards)}, but this "
                          f"config has data.backwards: {str(cfg.data.backwards).lower()}; set "
                          f"data.backwards={str(upstream.backwards).lower()}")
    return upstream


def inherit_arch(model: Arch, upstream: UpstreamRun | None) -> None:
    """Fill unset AWD-LSTM sizes from the upstream run (or the paper's); refuse contradicting ones."""
    if upstream is None:
        for k in ARCH_KEYS:
            if getattr(model, k) is None:
                setattr(model, k, PAPER_ARCH[k])
        return
    theirs = upstream.arch()
    clash = [f"model.{k}: config says {getattr(model, k)}, {upstream.path} has {theirs[k]}"
             for k in ARCH_KEYS if getattr(model, k) is not None and getattr(model, k) != theirs[k]]
    if clash:
        raise UlmfitError("init.from_run: the run's architecture does not match the config:\n  "
                          + "\n  ".join(clash) + "\n(leave model.emb_sz/n_hid/n_layers unset to take them from the run)")
    for k in ARCH_KEYS:
        setattr(model, k, theirs[k])
