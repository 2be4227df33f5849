"""`ulmfit lr-find`: fastai's learning-rate finder on the learner a training config would build.

The stage is planned exactly as `pretrain`, `finetune-lm` or `train-clf` would plan it (same data, vocab,
upstream weights, freezing), into a temporary folder that is deleted afterwards, so no run dir is
created or replaced; then one of its phases is set up (a classifier stage's `freeze_to`, or finetune-lm's
frozen/unfrozen phase) and fastai's `lr_find` sweeps the rate from `start_lr` to `end_lr`. The plot (with
fastai's suggestion points) is written as a PNG and the suggestions are returned: `minimum` (the rate
of the lowest loss / 10), `steep`, `valley` (fastai's default) and `slide`. fastai's sweep gives every
layer group the same rate: the suggestion is for the last group (the `lr` of `slice(lr / lr_div, lr)`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import torch
from fastai.callback.schedule import minimum, slide, steep, valley

from ulmfit_cli.console import info
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import atomic_write, check_output
from ulmfit_cli.layout import CLASSIFIER_STAGE
from ulmfit_cli.recipes import stage_named
from ulmfit_cli.resolve import resolve
from ulmfit_cli.runs import Run
from ulmfit_cli.train.callbacks import MetricsLog, ProgressLines
from ulmfit_cli.train.learners import check_freeze_to

SUGGESTIONS = ("minimum", "steep", "valley", "slide")


def _phase(plan, stage: str, index: int | None):
    """The phase to sweep: `index`, else the first one that trains (finetune-lm without an upstream run
    has no frozen phase)."""
    if index is None:
        index = next((i for i, ph in enumerate(plan.phases) if ph.epochs), 0)
    if not 0 <= index < len(plan.phases):
        what = "train.stages" if stage == CLASSIFIER_STAGE else f"{stage}'s phases"
        raise UlmfitError(f"--phase: {index} is out of range; {what} has {len(plan.phases)} "
                          f"(0..{len(plan.phases) - 1}): "
                          + ", ".join(ph.label or "train" for ph in plan.phases))
    return index, plan.phases[index]


def lr_find(stage: str, configs: list[Path], overrides: list[str], output: Path, phase: int | None = None,
            freeze_to: int | None = None, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_it: int = 100) -> dict:
    """Sweep the rate for `stage`'s config; write the plot to `output`; return {phase, suggestions}."""
    recipe = stage_named(stage, "lr-find")
    if not 0 < start_lr < end_lr:
        raise UlmfitError(f"--start-lr {start_lr} and --end-lr {end_lr}: need 0 < start < end")
    if num_it < 20:
        raise UlmfitError(f"--iters {num_it}: fastai's suggestions need at least 20 steps")
    resolved = resolve(recipe, configs, overrides)
    check_output(output, folder=False)  # after resolve has recorded the inputs: refused before the sweep
    with tempfile.TemporaryDirectory(prefix="ulmfit-lr-find-") as tmp:
        plan = recipe.plan(resolved, Run(Path(tmp)), ())
        learn = plan.learn
        # fastai's LRFinder saves and restores the model here
        learn.path, learn.model_dir = Path(tmp), "models"
        index, ph = _phase(plan, stage, phase)
        ph.setup(learn)
        label = ph.label or "train"
        if freeze_to is not None:
            check_freeze_to(learn, freeze_to, "--freeze-to")
            learn.freeze_to(freeze_to)
            label = f"freeze_to {freeze_to}"
        learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, (MetricsLog, ProgressLines))])  # no epochs
        info(f"lr-find: {num_it} steps of {stage} ({label}), the rate from {start_lr:g} to {end_lr:g}")
        with learn.no_bar():
            learn.lr_find(start_lr=start_lr, end_lr=end_lr, num_it=num_it, show_plot=False,
                          suggest_funcs=None)
        found = _suggestions(learn.recorder, num_it, (minimum, steep, valley, slide))
        matplotlib.use("Agg")  # fastai's plot_lr_find draws with pyplot: into a file, never a window
        learn.recorder.plot_lr_find(suggestions=[p for _, p in found.values()], nms=list(found))
        fig = plt.gcf()
        fig.suptitle(f"lr-find: {stage}, {label}")
        atomic_write(output, lambda f: fig.savefig(f, format="png", dpi=100))
        plt.close(fig)
    rate = ph.lr.stop if isinstance(ph.lr, slice) else ph.lr
    return {"phase": index, "setup": label, "config_lr": float(rate),
            "suggestions": {name: found[name][0] if name in found else None for name in SUGGESTIONS}}


def _suggestions(recorder, num_it: int, funcs) -> dict:
    """{name: (rate, (rate, loss) point)} of each of fastai's suggestion functions, on the points fastai's
    `lr_find` gives them. Ours because fastai's fails as a whole on a short sweep whose loss diverged (a
    suggestion with too few points raises, a NaN cut indexes with a tensor): here such a suggestion is left
    out."""
    lrs = torch.tensor([float(v) for v in recorder.lrs[num_it // 10:-5]])
    losses = torch.tensor([float(v) for v in recorder.losses[num_it // 10:-5]])
    finite = torch.isfinite(losses)
    if not finite.all():  # as fastai: up to the first NaN
        lrs, losses = lrs[:int(finite.float().argmin())], losses[:int(finite.float().argmin())]
    found = {}
    for func in funcs:
        try:
            lr, point = func(lrs, losses, num_it)
        except (IndexError, RuntimeError, ValueError):
            continue
        found[func.__name__] = (float(lr), point)
    return found
