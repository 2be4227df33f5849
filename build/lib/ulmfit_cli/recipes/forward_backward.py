"""Forward and backward in one command (`--directions both` on finetune-lm and train-clf).

ULMFiT's best classifiers average a forward and a backward model. `train_both` runs the stage twice,
forwards from the forward upstream and backwards from the backward one, into the members `fwd/` and
`bwd/` of one pair run dir, marked by `directions.json` (the format: `classify.pairs`). The upstream is a
pair made the same way (`init.from_run`), or a forward run plus `init.from_run_backward` (e.g. two
`import-lm` runs, or two pretrain runs). Each member's config is derived in code from the pair's
(`config.derive`: direction, upstream, name). A classifier pair's results.json holds the ensemble's
figures beside each member's; `predict`, `evaluate`, `export` and `load_classifier` take the pair as one
model.

The pair is built in `runs/.NAME.partial/` (`files.staged`; each member published there by the usual run
machinery) and renamed into place when both are done, so a failure leaves a finished pair untouched;
`--resume` continues the member that was interrupted and keeps the one that had finished.
"""
from __future__ import annotations

import os
from pathlib import Path

from ulmfit_cli.classify.pairs import members
from ulmfit_cli.classify.scoring import headline, score
from ulmfit_cli.classify.splits import read_splits
from ulmfit_cli.config import ClassifierConfig, StageConfig, derive
from ulmfit_cli.console import info
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import read_json, staged, staging_dir, write_json
from ulmfit_cli.inference.classifier import load_classifier
from ulmfit_cli.layout import CLASSIFIER, CLASSIFIER_STAGE, CONFIG, MEMBERS, PAIR, RESULTS
from ulmfit_cli.recipes import Stage, run_stage
from ulmfit_cli.resolve import config_of, resolve, resumed_dir, run_dir_of
from ulmfit_cli.runs import checkpoint_of, read_run

DIRECTIONS = ("forward", "backward", "both")


def check_directions(directions: str | None) -> None:
    if directions not in (None, *DIRECTIONS):
        raise UlmfitError(f"--directions: expected one of {', '.join(DIRECTIONS)}, got {directions!r}")


def _upstreams(stage: Stage, cfg) -> dict[str, str | None]:
    """Each member's upstream, checked to be an LM run of the member's direction before either member trains
    (else the forward one trains in full before the backward one's upstream is found wrong)."""
    init = cfg.init
    pair = init.from_run and members(init.from_run)
    if pair:
        if init.from_run_backward:
            raise UlmfitError(f"init.from_run_backward: init.from_run {init.from_run} is already a "
                              f"forward+backward pair; give one of them")
        keys = {name: ("init.from_run", str(Path(init.from_run) / name)) for name, _ in MEMBERS}
    elif init.from_run and not init.from_run_backward:
        raise UlmfitError(f"--directions both: init.from_run {init.from_run} is one language model; set "
                          f"init.from_run_backward to the backward one (e.g. an `import-lm wt103-bwd` run), "
                          f"or start from a pair made with --directions both")
    else:
        keys = {"fwd": ("init.from_run", init.from_run),
                "bwd": ("init.from_run_backward", init.from_run_backward)}
    for name, backwards in MEMBERS:
        key, path = keys[name]
        if path is None or read_run(path, key, stage.upstream, stage.upstream_weights).backwards == backwards:
            continue
        way, want, named = ("forwards", "backward", "wt103-bwd") if backwards else \
            ("backwards", "forward", "wt103-fwd")
        if pair:
            raise UlmfitError(f"init.from_run: the pair {init.from_run} has a {name}/ member trained {way}; "
                              f"a pair holds the forward LM in fwd/ and the backward one in bwd/ (make one "
                              f"with --directions both)")
        raise UlmfitError(f"{key}: {path} was trained {way}; it must be a {want} LM (data.backwards: "
                          f"{str(backwards).lower()}), e.g. an import-lm {named} run")
    return {name: path for name, (_, path) in keys.items()}


def _member_config(staging: Path) -> Path:
    """The forward member's config.yaml (finished or not): what a resumed pair starts a missing member
    from."""
    for folder in (staging / "fwd", staging_dir(staging / "fwd")):
        if (folder / CONFIG).is_file():
            return folder / CONFIG
    raise UlmfitError(f"--resume: {staging} has no member to continue from; start the pair afresh")


def _resumable(staging: Path) -> bool:
    """A pair whose first member started training (its config.yaml is written): what --resume continues.
    Bad input before that leaves nothing to continue (the member's own staging folder is gone)."""
    return (staging / PAIR).is_file() and any((folder / CONFIG).is_file() for name, _ in MEMBERS
                                              for folder in (staging / name, staging_dir(staging / name)))


def train_both(stage: Stage, configs: list[Path], overrides: list[str], run_dir: Path | None, force: bool,
               resume: bool, callbacks=()) -> dict:
    """Train `stage` forwards and backwards into one pair run dir; return the pair's results."""
    if not stage.upstream:  # pretraining starts from nothing: there is no upstream pair to follow
        raise UlmfitError(f"--directions both is for finetune-lm and train-clf, not {stage}")
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise UlmfitError("--directions both runs in one process; in a multi-process run, train the two "
                          "directions as two commands (data.backwards) and pass both to predict")
    cfg = None if resume else config_of(stage, configs, overrides)
    final = resumed_dir(run_dir) if resume else run_dir_of(cfg, run_dir)
    upstreams = None if resume else _upstreams(stage, cfg)  # checked before anything is written
    with staged(final, f"run dir {final}", force, resume, resumable=_resumable) as staging:
        if resume:
            plan = read_json(staging / PAIR, "--resume")
            cfg = config_of(stage, [_member_config(staging)], own=True)  # the pair rewrites it: not an input
        else:
            plan = {"stage": stage.name, "members": {"forward": "fwd", "backward": "bwd"},
                    "upstreams": upstreams}
            write_json(staging / PAIR, plan)  # also what a resumed pair reads its upstreams from
        results = {}
        for name, backwards in MEMBERS:
            member = staging / name
            if (member / RESULTS).is_file():  # finished before an interruption: kept
                results[name] = read_json(member / RESULTS, "--resume")
                continue
            info(f"--directions both: the {'backward' if backwards else 'forward'} model ({member})")
            if resume and checkpoint_of(staging_dir(member)):
                results[name] = run_stage(resolve(stage, run_dir=member, resume=True), resume=True,
                                          callbacks=callbacks)
                continue
            results[name] = run_stage(resolve(stage, cfg=_member(cfg, stage, final, name, backwards,
                                                                   plan["upstreams"][name]), run_dir=member),
                                      callbacks=callbacks)
        out = _pair_results(stage, staging, results)
        write_json(staging / RESULTS, out)
        for lock in staging.glob(".*.lock"):  # the members' locks, released: not part of the pair
            lock.unlink()
    return {"run_dir": str(final), **out}


def _member(cfg: StageConfig, stage: Stage, final: Path, name: str, backwards: bool, upstream: str | None):
    # each classifier member fits the baseline of the same splits: its blend weight is its own
    return derive(cfg, {"data.backwards": backwards, "run.name": f"{final.name}-{name}",
                        "init.from_run_backward": None, "init.from_run": upstream})


def _pair_results(stage: Stage, staging: Path, results: dict) -> dict:
    """A classifier pair: the ensemble's valid/test figures, each member's, and the baseline (one fit, the
    same splits); an LM pair: each member's figures."""
    flat = {f"{name}_{k}": v for name, r in results.items() for k, v in r.items()
            if isinstance(v, (int, float)) and not k.startswith("baseline")}
    if stage.name != CLASSIFIER_STAGE:
        return {"directions": "both", **flat}
    ens = load_classifier(*(staging / name for name, _ in MEMBERS), device="auto")
    cfg = read_run(staging / "fwd", "--directions", (CLASSIFIER_STAGE,), CLASSIFIER).typed(ClassifierConfig)
    _, _, valid, test = read_splits(cfg)
    splits = {name: (frame["text"].tolist(), ens.task.targets(ens.labels, frame))
              for name, frame in (("valid", valid), ("test", test)) if frame is not None}
    _, figures = score(ens.predict_proba, splits, ens.task, ens.labels, ens.thresholds)
    out = {"directions": "both", "task": ens.task.name, "labels": ens.labels, **headline(ens.task, figures)}
    out.update(flat)
    out.update({k: v for k, v in results["fwd"].items() if k.startswith("baseline")})
    return out
