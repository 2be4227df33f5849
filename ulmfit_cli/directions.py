"""Forward and backward in one command (`--directions both` on finetune-lm and train-clf).

ULMFiT's best classifiers average a forward and a backward model. `train_both` runs the stage twice,
forwards from the forward upstream and backwards from the backward one, into the members `fwd/` and
`bwd/` of one pair run dir, marked by `directions.json`. The upstream is a pair made the same way
(`init.from_run`), or a forward run plus `init.from_run_backward` (e.g. two `import-lm` runs, or two
pretrain runs). A classifier pair's results.json holds the ensemble's figures beside each member's;
`predict`, `evaluate`, `export` and `load_classifier` take the pair as one model (`members`).

The pair is built in `runs/.NAME.partial/` (each member published there by the usual run machinery) and
renamed into place when both are done, so a failure leaves a finished pair untouched; `--resume` continues
the member that was interrupted and keeps the one that had finished.
"""
from __future__ import annotations

import json
from pathlib import Path

from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.runs import PAIR_FILE

MEMBERS = (("fwd", False), ("bwd", True))
DIRECTIONS = ("forward", "backward", "both")


def members(path: Path) -> list[Path] | None:
    """The member dirs of a pair run dir or bundle (forward first), or None for a single model."""
    path = Path(path)
    if not (path / PAIR_FILE).is_file():
        return None
    return [path / name for name, _ in MEMBERS]


def direction_overrides(directions: str | None) -> list[str]:
    """`--directions forward|backward` as the `data.backwards` override it means."""
    if directions not in (None, "both") + DIRECTIONS[:2]:
        raise UlmfitError(f"--directions: expected one of {', '.join(DIRECTIONS)}, got {directions!r}")
    return {"forward": ["data.backwards=false"], "backward": ["data.backwards=true"]}.get(directions, [])


def _upstreams(cfg) -> dict[str, str | None]:
    init = cfg.init
    if init.from_run and members(init.from_run):
        if init.from_run_backward:
            raise UlmfitError(f"init.from_run_backward: init.from_run {init.from_run} is already a forward+backward "
                              f"pair; give one of them")
        return {name: str(Path(init.from_run) / name) for name, _ in MEMBERS}
    if init.from_run and not init.from_run_backward:
        raise UlmfitError(f"--directions both: init.from_run {init.from_run} is one language model; set "
                          f"init.from_run_backward to the backward one (e.g. an `import-lm wt103-bwd` run), or "
                          f"start from a pair made with --directions both")
    return {"fwd": init.from_run, "bwd": init.from_run_backward}


def _member_config(staging: Path) -> Path:
    """The forward member's config.yaml (finished or not): what a resumed pair starts a missing member from."""
    from ulmfit_cli.files import staging_dir
    for folder in (staging / "fwd", staging_dir(staging / "fwd")):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise UlmfitError(f"--resume: {staging} has no member to continue from; start the pair afresh")


def train_both(stage: str, configs: list[Path], overrides: list[str], run_dir: Path | None, force: bool,
               resume: bool, callbacks=()) -> dict:
    """Train `stage` forwards and backwards into one pair run dir; return the pair's results."""
    import os
    import shutil

    from ulmfit_cli import api
    from ulmfit_cli.config import load_config
    from ulmfit_cli.console import info
    from ulmfit_cli.files import exclusive, publish, read_json, staging_dir, write_json
    from ulmfit_cli.runs import checkpoint_of
    if stage not in ("finetune-lm", "train-clf"):
        raise UlmfitError(f"--directions both is for finetune-lm and train-clf, not {stage}")
    if resume and force:
        raise UlmfitError("--resume and --force contradict each other: --force starts the run afresh")
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise UlmfitError("--directions both runs in one process; in a multi-process run, train the two "
                          "directions as two commands (data.backwards) and pass both to predict")
    if resume:
        if run_dir is None:
            raise UlmfitError("--resume needs --run-dir")
        final = Path(run_dir)
    else:
        cfg = load_config(stage, configs, overrides)
        final = Path(run_dir or cfg.run.dir or Path("runs") / cfg.run.name)
    staging = staging_dir(final)
    with exclusive(final, f"run dir {final}"):
        if resume:
            if not (staging / PAIR_FILE).is_file():
                raise UlmfitError(f"--resume: no unfinished forward+backward pair in {staging}")
            plan = read_json(staging / PAIR_FILE, "--resume")
        else:
            if final.exists() and any(final.iterdir()) and not force:
                raise UlmfitError(f"run dir {final} exists and is not empty; pass --force to replace it")
            plan = {"stage": stage, "members": {"forward": "fwd", "backward": "bwd"}, "upstreams": _upstreams(cfg)}
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            write_json(staging / PAIR_FILE, plan)  # also what a resumed pair reads its upstreams from
        results = {}
        for name, backwards in MEMBERS:
            member = staging / name
            if (member / "results.json").is_file():  # finished before an interruption: kept
                results[name] = read_json(member / "results.json", "--resume")
                continue
            info(f"--directions both: the {'backward' if backwards else 'forward'} model ({member})")
            if resume and checkpoint_of(staging_dir(member)):
                results[name] = api.train(stage, [], [], run_dir=member, resume=True, callbacks=callbacks)
                continue
            base = ([_member_config(staging)], []) if resume else (configs, overrides)
            up = plan["upstreams"][name]
            more = [f"data.backwards={str(backwards).lower()}", f"run.name={final.name}-{name}",
                    "init.from_run_backward=null", f"init.from_run={up if up else 'null'}"]
            if stage == "train-clf" and backwards:
                more.append("data.baseline=false")  # the same splits as the forward member's: fitted once
            results[name] = api.train(stage, base[0], [*base[1], *more], run_dir=member, callbacks=callbacks)
        out = _pair_results(stage, staging, results)
        write_json(staging / "results.json", out)
        for lock in staging.glob(".*.lock"):  # the members' locks, released: not part of the pair
            lock.unlink()
        publish(staging, final)
    return {"run_dir": str(final), **out}


def _pair_results(stage: str, staging: Path, results: dict) -> dict:
    """A classifier pair: the ensemble's valid/test figures, each member's, and the baseline (one fit, the
    same splits); an LM pair: each member's figures."""
    flat = {f"{name}_{k}": v for name, r in results.items() for k, v in r.items()
            if isinstance(v, (int, float)) and not k.startswith("baseline")}
    if stage != "train-clf":
        return {"directions": "both", **flat}
    from ulmfit_cli.config import ClassifierConfig
    from ulmfit_cli.inference.classifier import load_classifier
    from ulmfit_cli.inference.evaluation import task_scores
    from ulmfit_cli.runs import read_run
    from ulmfit_cli.stages.train_clf import read_splits
    from ulmfit_cli.tasks import HEADLINE, encode_targets
    ens = load_classifier(*(staging / name for name, _ in MEMBERS), device="auto")
    cfg = read_run(staging / "fwd", "--directions", ("train-clf",), "model.pth").typed(ClassifierConfig)
    _, _, valid, test = read_splits(cfg)
    out = {"directions": "both", "task": ens.task, "labels": ens.labels}
    for split, frame in (("valid", valid), ("test", test)):
        if frame is None:
            continue
        figures = task_scores(ens.task, encode_targets(ens.task, ens.labels, frame),
                              ens.predict_proba(frame["text"].tolist()), ens.labels, ens.thresholds)
        out.update({f"{split}_{k}": figures[k] for k in (*HEADLINE[ens.task], "n")})
    out.update(flat)
    out.update({k: v for k, v in results["fwd"].items() if k.startswith("baseline")})
    return out
