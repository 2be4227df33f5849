"""The Python API behind the command line: what `ulmfit pretrain | finetune-lm | train-clf`, `prepare` and
`generate` run, importable (as spaCy's `train()` is behind `spacy train`).

    from ulmfit_cli import api
    results = api.train("pretrain", ["configs/demo/pretrain.yaml"], ["train.epochs=1"], run_dir="runs/lm")
    api.train("train-clf", ["configs/demo/train-clf.yaml"], ["init.from_run=runs/lm"])
    api.generate("runs/lm", "The history of", n_words=20, seed=0)

Bad input raises `UlmfitError` (the CLI's exit 2), a NaN loss `TrainingFailed` (exit 3).
"""
from __future__ import annotations

import importlib
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

from ulmfit_cli.resolve import Resolved, resolve

STAGE_MODULES = {"pretrain": "pretrain", "finetune-lm": "finetune_lm", "train-clf": "train_clf"}


def train(stage: str, configs: Sequence[Path | str] = (), overrides: Sequence[str] = (),
          run_dir: Path | str | None = None, force: bool = False, resume: bool = False,
          callbacks: Sequence = (), directions: str | None = None) -> dict:
    """Resolve the config and run one training stage into its run dir; return its results.

    `configs` are YAML files merged in order, `overrides` "key=value" strings (`--set`); `callbacks` are
    fastai callbacks added to the stage's learner (e.g. to watch or interrupt training). With `resume`
    and no `configs`, the run's own config.yaml is used. `directions="both"`: a forward and a backward
    model in one pair run dir (`ulmfit_cli.directions`).
    """
    from ulmfit_cli.directions import direction_overrides, train_both
    if directions == "both":
        return train_both(stage, [Path(c) for c in _listed(configs)], _listed(overrides),
                          None if run_dir is None else Path(run_dir), force, resume, callbacks)
    overrides = [*_listed(overrides), *direction_overrides(directions)]
    resolved = resolve(stage, [Path(c) for c in _listed(configs)], _listed(overrides),
                       None if run_dir is None else Path(run_dir), resume)
    return run_stage(resolved, force, resume, callbacks)


def _listed(values) -> list:
    """One file or override given alone (a str or a Path) is a list of one, not of its characters."""
    return [values] if isinstance(values, (str, Path)) else list(values)


def run_stage(resolved: Resolved, force: bool = False, resume: bool = False, callbacks: Sequence = ()) -> dict:
    """Run an already resolved stage: join a multi-process run, open the run dir, train, publish.

    Returns the stage's results; None on the other processes of a multi-process run (rank 0 reports)."""
    from ulmfit_cli.errors import UlmfitError
    from ulmfit_cli.report import write_plots
    from ulmfit_cli.runs import open_run
    from ulmfit_cli.train import distributed
    from ulmfit_cli.train.checkpoints import fit_plan
    if resume and force:
        raise UlmfitError("--resume and --force contradict each other: --force starts the run afresh")
    cfg = resolved.cfg
    stage = importlib.import_module(f"ulmfit_cli.stages.{STAGE_MODULES[resolved.stage]}")
    main = distributed.setup(cfg.run).main
    try:
        with ExitStack() as stack:
            # rank 0 opens (or refuses) the run dir; the others get the same Run, or the same error
            run = distributed.from_main(lambda: stack.enter_context(
                open_run(resolved.stage, cfg, resolved.requested, force, resume)))
            results = fit_plan(stage.plan(resolved, run, tuple(callbacks)), run, cfg)
            if run.writes:
                write_plots(run.path, title=f"{resolved.stage}: {resolved.run_dir.name}")
    finally:
        distributed.teardown()
    return results if main else None


def prepare(configs: Sequence[Path | str] = (), overrides: Sequence[str] = (), force: bool = False):
    """Build (or find in the cache) the token store of a pretrain config's data; returns the `TokenStore`."""
    from ulmfit_cli.config import load_config
    from ulmfit_cli.corpus.prepare import prepare as build
    cfg = load_config("pretrain", [Path(c) for c in _listed(configs)], _listed(overrides))
    return build(cfg.data, cfg.run.seed, force=force)


def generate(run_dir: Path | str, prompt: str = "", n_words: int = 40, temperature: float = 1.0,
             n_samples: int = 1, seed: int | None = None, device: str = "auto") -> list[str]:
    """Texts sampled from a pretrain or finetune-lm run (see `ulmfit_cli.inference.generate`)."""
    from ulmfit_cli.inference.generate import generate as sample
    return sample(run_dir, prompt, n_words, temperature, n_samples, seed, device)
