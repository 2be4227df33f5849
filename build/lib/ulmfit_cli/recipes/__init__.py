"""The recipes: one module per training stage (pretrain, finetune_lm, train_clf), each exposing
`plan(resolved, run, cbs) -> Plan` (the learner, its phases and what it writes once trained), which
`run_stage` below trains (`train.checkpoints.fit_plan`) and `ulmfit lr-find` sweeps; and the recipes built
on them: `forward_backward` (--directions both), `tune` (the search), `lr_find`, `import_lm`.

`STAGES` is the one registry of the training stages: name, config class, recipe and upstream runs;
`run_stage` trains a resolved one into its run dir (what `api.train`, the pairs and tune's trials run).
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Sequence

from ulmfit_cli.config import ClassifierConfig, FinetuneConfig, PretrainConfig, StageConfig
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.layout import ENCODER, LM_STAGES, LM_WEIGHTS
from ulmfit_cli.recipes import finetune_lm, pretrain, train_clf
from ulmfit_cli.resolve import Resolved
from ulmfit_cli.runs import open_run
from ulmfit_cli.train import distributed
from ulmfit_cli.train.checkpoints import fit_plan
from ulmfit_cli.train.report import write_plots


@dataclass(frozen=True)
class Stage:
    name: str
    config: type[StageConfig]
    plan: Callable                       # the recipe: plan(resolved, run, cbs) -> train.checkpoints.Plan
    upstream: tuple[str, ...] = ()       # the stages whose run init.from_run may name
    upstream_weights: str | None = None  # what it loads from that run

    def __str__(self) -> str:
        return self.name


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("pretrain", PretrainConfig, pretrain.plan),
    Stage("finetune-lm", FinetuneConfig, finetune_lm.plan, LM_STAGES, LM_WEIGHTS),
    Stage("train-clf", ClassifierConfig, train_clf.plan, LM_STAGES, ENCODER),
)}


def stage_named(name: str, what: str | None = None) -> Stage:
    """The stage called `name` (`what`: the command that asked, for the error)."""
    if name not in STAGES:
        raise UlmfitError(f"{what + ': ' if what else ''}unknown stage {name!r}; expected one of: "
                          f"{', '.join(STAGES)}")
    return STAGES[name]


def run_stage(resolved: Resolved, force: bool = False, resume: bool = False,
              callbacks: Sequence = ()) -> dict | None:
    """Run an already resolved stage: join a multi-process run, open the run dir, train, publish.

    Returns the stage's results; None on the other processes of a multi-process run (rank 0 reports)."""
    cfg = resolved.cfg
    main = distributed.setup(cfg.run).main
    try:
        with ExitStack() as stack:
            # rank 0 opens (or refuses) the run dir; the others get the same Run, or the same error
            run = distributed.from_main(lambda: stack.enter_context(
                open_run(resolved.stage.name, cfg, resolved.requested, force, resume)))
            results = fit_plan(resolved.stage.plan(resolved, run, tuple(callbacks)), run, cfg)
            if run.writes:
                write_plots(run.path, title=f"{resolved.stage.name}: {resolved.run_dir.name}")
    finally:
        distributed.teardown()
    return results if main else None
