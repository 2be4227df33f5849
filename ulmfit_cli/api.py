"""The Python API behind the command line: every `ulmfit` command is one function here, importable (as spaCy's
`train()` is behind `spacy train`); `cli.py` only parses flags, calls these and prints.

    from ulmfit_cli import api
    results = api.train("pretrain", ["configs/demo/pretrain.yaml"], ["train.epochs=1"], run_dir="runs/lm")
    api.train("train-clf", ["configs/trec6/train-clf.yaml"], ["init.from_run=runs/lm"])
    api.generate("runs/lm", "The history of", n_words=20, seed=0)
    api.predict(["runs/clf"], "texts.csv", Path("preds.csv"))
    api.curve(["configs/trec6/train-clf.yaml"], ["init.from_run=runs/lm"], sizes="100,200,all", seeds=3)

Bad input raises `UlmfitError` (the CLI's exit 2), a NaN loss `TrainingFailed` (exit 3).
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from ulmfit_cli.classify.baseline import baseline_of_run
from ulmfit_cli.classify.scoring import score
from ulmfit_cli.config import derive, to_yaml
from ulmfit_cli.console import info
from ulmfit_cli.corpus.download import download_wiki as fetch_wiki
from ulmfit_cli.corpus.prepare import prepare as build_store
from ulmfit_cli.corpus.store import TokenStore
from ulmfit_cli.corpus.tables import check_table_output, read_texts
from ulmfit_cli import load_classifier  # the one choice of runtime (onnxruntime for ONNX bundles)
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import check_output, command_inputs, reads, write_json
from ulmfit_cli.inference.card import card_text
from ulmfit_cli.inference.evaluate import plot_confusion, report_text  # noqa: F401  (report_text: the CLI's)
from ulmfit_cli.inference.export import export as write_bundle
from ulmfit_cli.inference.generate import generate as sample
from ulmfit_cli.inference.predict import predict_table
from ulmfit_cli.inference.report_page import explain_cases, write_page
from ulmfit_cli.layout import CARD, CONFUSION_PLOT, REPORT, REPORT_PAGE
from ulmfit_cli.recipes import STAGES, run_stage, stage_named  # noqa: F401  (STAGES: the stage names)
from ulmfit_cli.recipes.curve import curve as learning_curve
from ulmfit_cli.recipes.import_lm import import_lm as convert
from ulmfit_cli.recipes.lr_find import lr_find as sweep
from ulmfit_cli.recipes.forward_backward import check_directions, train_both
from ulmfit_cli.recipes.tune import tune as search
from ulmfit_cli.resolve import Resolved, config_of, resolve
from ulmfit_cli.train.device import decide
from ulmfit_cli.train.batches import MAX_ROWS, MAX_TOKENS
from ulmfit_cli.train.report import run_table


def command(f):
    """An API function is one command: what it reads (configs, data, upstream runs, --model, --input, import
    sources) it never writes over (`files.command_inputs`)."""
    @functools.wraps(f)
    def run(*args, **kwargs):
        with command_inputs():
            return f(*args, **kwargs)
    return run


def _listed(values) -> list:
    """One file or override given alone (a str or a Path) is a list of one, not of its characters."""
    return [values] if isinstance(values, (str, Path)) else list(values or [])


def resolved(stage: str, configs: Sequence[Path | str] = (), overrides: Sequence[str] = (),
             run_dir: Path | str | None = None, resume: bool = False,
             directions: str | None = None) -> Resolved:
    """The stage's config resolved as `train` would run it (what `--print-config` prints); `directions`
    forward or backward sets `data.backwards`."""
    check_directions(directions)
    recipe = stage_named(stage)
    run_dir = None if run_dir is None else Path(run_dir)
    cfg = config_of(recipe, [Path(c) for c in _listed(configs)], _listed(overrides), run_dir, resume)
    if directions in ("forward", "backward"):
        cfg = derive(cfg, {"data.backwards": directions == "backward"})
    return resolve(recipe, cfg=cfg, run_dir=run_dir, resume=resume)


@command
def train(stage: str, configs: Sequence[Path | str] = (), overrides: Sequence[str] = (),
          run_dir: Path | str | None = None, force: bool = False, resume: bool = False,
          callbacks: Sequence = (), directions: str | None = None) -> dict | None:
    """Resolve the config and run one training stage into its run dir; return its results, and the run dir
    under `run_dir`.

    `configs` are YAML files merged in order, `overrides` "key=value" strings (`--set`); `callbacks` are
    fastai callbacks added to the stage's learner (e.g. to watch or interrupt training). With `resume`
    and no `configs`, the run's own config.yaml is used. `directions="both"`: a forward and a backward
    model in one pair run dir (`ulmfit_cli.recipes.forward_backward`). None on the other processes of a
    multi-process run (rank 0 reports).
    """
    if directions == "both":
        return train_both(stage_named(stage), [Path(c) for c in _listed(configs)], _listed(overrides),
                          None if run_dir is None else Path(run_dir), force, resume, callbacks)
    run = resolved(stage, configs, overrides, run_dir, resume, directions)
    results = run_stage(run, force, resume, callbacks)
    return None if results is None else {"run_dir": str(run.run_dir), **results}


@command
def config_yaml(stage: str, configs: Sequence[Path | str] = (), overrides: Sequence[str] = (),
                run_dir: Path | str | None = None, resume: bool = False,
                directions: str | None = None) -> str:
    """`--print-config`: the resolved config as YAML (`prepare`'s: the pretrain config as loaded)."""
    if stage == "prepare":
        return to_yaml(config_of(STAGES["pretrain"], [Path(c) for c in _listed(configs)], _listed(overrides)))
    return to_yaml(resolved(stage, configs, overrides, run_dir, resume, None if directions == "both" else
                            directions).cfg)


@command
def prepare(configs: Sequence[Path | str] = (), overrides: Sequence[str] = (),
            force: bool = False) -> TokenStore:
    """Build (or find in the cache) the token store of a pretrain config's data; returns the `TokenStore`."""
    cfg = config_of(STAGES["pretrain"], [Path(c) for c in _listed(configs)], _listed(overrides))
    return build_store(cfg.data, cfg.run.seed, force=force)


@command
def generate(run_dir: Path | str, prompt: str = "", n_words: int = 40, temperature: float = 1.0,
             n_samples: int = 1, seed: int | None = None, device: str = "auto") -> list[str]:
    """Texts sampled from a pretrain or finetune-lm run (see `ulmfit_cli.inference.generate`)."""
    return sample(run_dir, prompt, n_words, temperature, n_samples, seed, device)


def _inputs(models: Sequence[Path | str], input) -> list[Path]:
    """predict's and evaluate's inputs, recorded before anything is written (`files.reads`)."""
    reads(input, "the --input file")
    for m in models:
        reads(m, "--model")
    return [Path(m) for m in models]


def _classifiers(models: Sequence[Path], device: str, precision: str, threads: int | None = None,
                 runtime: str = "auto"):
    """The classifier (or ensemble) and the precision it runs at. `device` as asked (auto: an ONNX bundle runs
    on onnxruntime's CPU provider, as `ulmfit predict` runs it, a run dir on the GPU if there is one)."""
    _, precision = decide(device, precision, key="--")  # fp16/bf16 need a GPU
    if precision != "fp32" and runtime == "auto":  # autocast is PyTorch's
        runtime = "torch"
    return load_classifier(*models, device=device, threads=threads, runtime=runtime), precision


@command
def predict(models: Sequence[Path | str], input: str | Path, output: Path, text_col=None,
            input_format: str | None = None, bs: int = MAX_ROWS, device: str = "auto",
            precision: str = "fp32",
            encoding: str = "utf-8", threads: int | None = None, runtime: str = "auto",
            max_tokens: int = MAX_TOKENS, explain: str | None = None, top_k: int = 5):
    """Classify the texts of `input` (a table, fastText or text file; `-`: stdin) with the models (several:
    their ensemble) and write its rows plus `prediction` and one `prob_<label>` column per output to `output`
    (`-`: stdout); `text_col` defaults to the columns the model was trained on. Returns the frame written.
    ONNX bundles run on onnxruntime (`runtime`: auto, onnx or torch; `lite.predict` is this without torch).
    `explain` (ig or grad_input): an `explanation` column, the `top_k` tokens (JSON Lines: all)."""
    models = _inputs(models, input)
    check_output(output, folder=False)
    check_table_output(output)
    clf, precision = _classifiers(models, device, precision, threads, runtime)
    return predict_table(clf, input, output, text_col, input_format, encoding, explain, top_k, bs=bs,
                         max_tokens=max_tokens, precision=precision)


@command
def evaluate(models: Sequence[Path | str], input: str | Path, output: Path, text_col=None, label_col=None,
             input_format: str | None = None, baseline: bool = True, bs: int = 64, device: str = "auto",
             precision: str = "fp32", encoding: str = "utf-8",
             explain: bool = True) -> tuple[dict, list[Path]]:
    """Score the models on the labelled `input` (labels in `label_col`, default the model's) into the folder
    `output`: report.json (the task's figures, and the TF-IDF baseline refitted on the first model's training
    split unless `baseline` is off), report.html (`inference.report_page`; its texts' words highlighted
    unless `explain` is off), confusion.png (single-label) and the outputs as .npy. Returns (report, files
    written)."""
    models = _inputs(models, input)
    check_output(output, folder=True)
    clf, precision = _classifiers(models, device, precision)
    task = clf.task
    labels_in = clf.spec.label_col if label_col is None else label_col
    if not task.label_lists and isinstance(labels_in, list):
        raise UlmfitError(f"--label-col: {','.join(labels_in)!r} names several columns, "
                          f"but the model is {task}")
    df = read_texts(input, "--input", clf.text_col if text_col is None else text_col, labels_in, encoding,
                    fmt=input_format, task=task, label_delim=clf.spec.label_delim)
    task.check_known(df["label"].tolist(), clf.labels, f"--input: {input}")
    targets = task.targets(clf.labels, df)
    texts = df["text"].tolist()
    probs = clf.predict_proba(texts, bs=bs, precision=precision, progress=True)
    _, figures = score(lambda _: probs, {"input": (texts, targets)}, task, clf.labels, clf.thresholds)
    report = {"models": [str(m) for m in models], "input": str(input), "task": task.name, **figures["input"]}
    if baseline:
        base = baseline_of_run(models[0], texts, targets, clf.labels)
        if base is not None:
            report["baseline"] = base
    cal = task.reliability(probs, targets, clf.labels)
    if cal is not None:
        report["calibration"] = cal
    shown, found, note = task.shown(probs, targets, clf.labels, clf.thresholds), {}, "--no-explain"
    if explain and importlib.util.find_spec("captum") is None:  # the explain extra: the page says so
        note = "words not highlighted: Captum is not installed (pip install 'ulmfit-cli[explain]')"
        info(note)
    elif explain:
        found = explain_cases(clf, texts, shown)
    write_json(output / REPORT, report)
    write_page(output / REPORT_PAGE, report, task, probs, targets, texts, shown, found, note)
    written = [output / REPORT, output / REPORT_PAGE]
    if task.by_class:
        plot_confusion(report, output / CONFUSION_PLOT)
        written.append(output / CONFUSION_PLOT)
    np.save(output / task.outputs_file, probs)
    return report, written


def report(path: Path) -> str:
    """`ulmfit report`: a training run's figures, or an export bundle's model card."""
    return card_text(Path(path)) if (Path(path) / CARD).is_file() else run_table(Path(path))


download_wiki = command(fetch_wiki)           # `ulmfit download-wiki`
export = command(write_bundle)                # `ulmfit export`
lr_find = command(sweep)                      # `ulmfit lr-find`
tune = command(search)                        # `ulmfit tune`
curve = command(learning_curve)               # `ulmfit curve`
import_lm = command(convert)                  # `ulmfit import-lm`
