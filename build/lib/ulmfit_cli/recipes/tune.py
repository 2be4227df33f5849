"""`ulmfit tune`: search the classifier's recipe on the validation set, with Optuna.

Each trial is a train-clf run of the config with one draw of the `search` section's ranges: every
stage's rate scaled by `lr_scale`, `train.lr_div`, `model.drop_mult`, the epochs of the last and of the
earlier `train.stages`, `train.bs`. A trial is scored by its best validation figure (`search.metric`,
with `train.keep: best` and `train.monitor` set to it), and pruned when Optuna's MedianPruner finds it
behind the earlier trials at the same epoch (each epoch's figure is reported from a fastai callback).
Trials never see the test set: `data.test` and the baseline (and so the blend) are switched off in them,
and the test file is not opened; self-training rounds are off in trials too (the search is over the
classifier's recipe; best.yaml keeps the config's rounds).

The tune dir (`runs/<run.name>-tune` by default) holds the Optuna storage (`study.db`, SQLite), so an
interrupted search continues with `--resume`; `trials.csv` and `trials.png` (every trial's figure and the
best so far); and `best.yaml`, the config with the best trial's values, which `ulmfit train-clf --config`
takes to train the final model and score the test set once. Each trial's run dir is removed when it ends.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ulmfit_cli.config import derive, to_yaml
from ulmfit_cli.console import info
from ulmfit_cli.errors import Abandoned, UlmfitError
from ulmfit_cli.files import atomic_write, staged
from ulmfit_cli.layout import BEST_CONFIG, CLASSIFIER_STAGE, SEARCH, STUDY, TRIALS, TRIALS_PLOT, TRIALS_TABLE
from ulmfit_cli.recipes import STAGES, run_stage
from ulmfit_cli.resolve import config_of, resolve, search_dir_of
from ulmfit_cli.train.callbacks import TrainingEpochs, epoch_figures

STUDY_NAME = "ulmfit-tune"
STAGE = STAGES[CLASSIFIER_STAGE]


def _import_optuna():
    try:
        import optuna  # late: the tune extra is optional
    except ImportError:
        raise UlmfitError("ulmfit tune needs Optuna: pip install 'ulmfit-cli[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    return optuna


def _draw(trial, cfg) -> dict:
    """One trial's values of the searched keys (those whose range is not null)."""
    s, out = cfg.search, {}
    if s.lr_scale:
        out["lr_scale"] = trial.suggest_float("lr_scale", *s.lr_scale, log=True)
    if s.lr_div:
        out["lr_div"] = trial.suggest_float("lr_div", *s.lr_div, log=True)
    if s.drop_mult:
        out["drop_mult"] = trial.suggest_float("drop_mult", *s.drop_mult)
    if s.epochs:
        out["epochs"] = trial.suggest_int("epochs", *s.epochs)
    if s.early_epochs and len(cfg.train.stages) > 1:
        out["early_epochs"] = trial.suggest_int("early_epochs", *s.early_epochs)
    if s.bs:
        out["bs"] = trial.suggest_categorical("bs", list(s.bs))
    return out


def apply(cfg, values: dict, metric: str | None = None):
    """The config with a trial's values put in; with `metric`, keeping the epoch best by it, as the trials
    were scored (what best.yaml holds)."""
    t = cfg.train
    stages = [st.model_dump(mode="json") for st in t.stages]
    for i, st in enumerate(stages):
        st["lr"] = (st["lr"] or t.lr) * values.get("lr_scale", 1.0)
        key = "epochs" if i == len(stages) - 1 else "early_epochs"
        if key in values:
            st["epochs"] = values[key]
    changes = {"train.stages": stages, **{f"train.{k}": values[k] for k in ("lr_div", "bs") if k in values},
               **({"model.drop_mult": values["drop_mult"]} if "drop_mult" in values else {}),
               **({"train.keep": "best", "train.monitor": metric} if metric is not None else {})}
    return derive(cfg, changes)


class ReportToOptuna(TrainingEpochs):
    """Reports each epoch's validation figure (the Recorder's `column`) to Optuna's `trial` and gives the
    trial up (`Abandoned`) when Optuna prunes it. Ours, not optuna-integration's FastAIPruningCallback
    (another dependency): that one counts epochs afresh in every fit, and a stage of gradual unfreezing is
    several."""
    order = 60  # after the Recorder has the epoch's figures

    def __init__(self, trial, column: str):
        self.trial, self.column, self.epochs = trial, column, 0

    def after_epoch(self):
        value = epoch_figures(self.recorder).get(self.column)
        if not self.trained or value is None:
            return
        self.epochs += 1
        self.trial.report(float(value), self.epochs)
        if self.trial.should_prune():
            raise Abandoned(f"pruned by Optuna after epoch {self.epochs}")


def tune(configs: list[Path], overrides: list[str], run_dir: Path | None = None, trials: int | None = None,
         force: bool = False, resume: bool = False) -> dict:
    """Run (or continue) the search; return the best trial's {value, params, best_config}."""
    optuna = _import_optuna()
    own = resume  # the search's own search.yaml (or a copy of it), which it rewrites: not an input
    if own:
        if run_dir is None or not (Path(run_dir) / SEARCH).is_file():
            raise UlmfitError(f"--resume: {run_dir} is not a tune dir (no search.yaml); give "
                              f"--run-dir of a search")
        configs = [Path(run_dir) / SEARCH]
    cfg = config_of(STAGE, configs, overrides, own=own)
    if trials:
        cfg = derive(cfg, {"search.trials": trials})
    task = cfg.task
    metric = task.selection if cfg.search.metric == "auto" else cfg.search.metric
    if metric not in task.monitors:
        raise UlmfitError(f"search.metric: {metric} is not a figure of a {task} task; use one of "
                          f"{', '.join(m for m in task.monitors if m != 'valid_loss')}")
    n_trials = cfg.search.trials  # --trials is in it, and so in search.yaml for --resume
    out = search_dir_of(cfg, run_dir)
    # grows in place, trial by trial: its Optuna storage is what --resume continues
    with staged(out, f"tune dir {out}", force, resume, in_place=True):
        atomic_write(out / SEARCH, lambda f: f.write(to_yaml(cfg).encode("utf-8")))  # what --resume reads
        storage = f"sqlite:///{(out / STUDY).resolve()}"
        direction = "minimize" if task.lower_is_better(metric) else "maximize"
        pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2) if cfg.search.prune else \
            optuna.pruners.NopPruner()
        study = optuna.create_study(study_name=STUDY_NAME, storage=storage, load_if_exists=True,
                                    direction=direction, pruner=pruner)
        # seeded, and moved on by the trials stored, so that a resumed search does not draw its first
        # values again
        study.sampler = optuna.samplers.TPESampler(seed=cfg.run.seed + len(study.trials))
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # the trial a killed search was in
        # a kill can land between a trial's tell and its tables, or inside a trial: the study is the record
        shutil.rmtree(out / TRIALS, ignore_errors=True)  # a killed trial's run dir, staging and lock
        if any(t.params for t in study.get_trials(deepcopy=False)):
            _write_tables(study, out, metric)
        ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        done = len(study.get_trials(deepcopy=False, states=ended))
        if done:
            info(f"tune: {out}: {done} of {n_trials} trial(s) already done")
        column = task.monitors[metric]
        while done < n_trials:
            trial = study.ask()
            values = _draw(trial, cfg)
            trial_dir = out / TRIALS / f"{trial.number:03d}"
            t0 = time.perf_counter()
            try:
                # never the test set (nor the baseline, which would score it, nor the blend with it): the
                # search scores the classifier's recipe on valid only, without self-training's rounds
                trial_cfg = derive(apply(cfg, values, metric), {
                    "data.test": None, "data.baseline": False, "model.blend": "off",
                    "train.self_training_rounds": 0, "run.dir": str(trial_dir),
                    "run.name": f"{cfg.run.name}-trial-{trial.number:03d}"})
                reporter = ReportToOptuna(trial, column)
                results = run_stage(resolve(STAGE, cfg=trial_cfg), force=True, callbacks=[reporter])
            except Abandoned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                outcome = f"pruned after epoch {reporter.epochs}"
            except BaseException:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            else:
                study.tell(trial, results[f"valid_{metric}"])
                outcome = f"valid {metric} {results[f'valid_{metric}']:.4f}"
            finally:
                shutil.rmtree(out / TRIALS, ignore_errors=True)
            done += 1
            best = _best(study)
            shown = " ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in values.items())
            info(f"tune: trial {trial.number + 1} ({done}/{n_trials} done): {shown}: {outcome} "
                 f"({time.perf_counter() - t0:.0f} s)"
                 + (f"; best {best.value:.4f} (trial {best.number + 1})" if best else ""))
            _write_tables(study, out, metric)
        best = _best(study)
        if best is None:
            raise UlmfitError("tune: every trial was pruned; run more trials (--resume --trials N), or "
                              "search.prune=false")
        best_cfg = apply(cfg, best.params, metric)
        atomic_write(out / BEST_CONFIG, lambda f: f.write(to_yaml(best_cfg).encode("utf-8")))
    return {"best_value": best.value, "metric": metric, "best_trial": best.number + 1, "trials": done,
            **best.params, "best_config": str(out / BEST_CONFIG)}


def _best(study):
    """The best complete trial, or None while every trial was pruned or failed (Optuna raises then)."""
    done = study.get_trials(deepcopy=False, states=(_import_optuna().trial.TrialState.COMPLETE,))
    return study.best_trial if done else None


def _write_tables(study, out: Path, metric: str) -> None:
    """trials.csv (one row per trial: state, values, figure, seconds) and trials.png."""
    # a trial a kill interrupted before it drew all its values tried nothing: it is not a row
    drawn = {name for t in study.trials for name in t.params}
    rows = [{"trial": t.number + 1, "state": t.state.name.lower(), f"valid_{metric}": t.value,
             "seconds": round(t.duration.total_seconds(), 1) if t.duration else None, **t.params}
            for t in study.trials if t.params and set(t.params) >= drawn]
    frame = pd.DataFrame(rows)
    atomic_write(out / TRIALS_TABLE, lambda f: f.write(frame.to_csv(index=False).encode("utf-8")))
    done = frame[frame["state"] == "complete"]
    fig = Figure(figsize=(7, 4))  # not pyplot: no backend, no window
    ax = fig.subplots()
    ax.plot(done["trial"], done[f"valid_{metric}"], "o", label="trial")
    if len(done):
        best = done[f"valid_{metric}"].cummin() if study.direction.name == "MINIMIZE" else \
            done[f"valid_{metric}"].cummax()
        ax.step(done["trial"], best, where="post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"valid {metric}")
    ax.legend()
    fig.tight_layout()
    atomic_write(out / TRIALS_PLOT, lambda f: fig.savefig(f, format="png", dpi=100))
