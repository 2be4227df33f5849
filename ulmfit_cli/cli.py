"""The `ulmfit` command line: parse flags, call the API (`ulmfit_cli.api`), print; nothing else.

Bad input ends with a one-screen message and exit code 2, a NaN loss with exit code 3, Ctrl-C with 130 and
SIGTERM with 143 (after saying what was kept). The API (and with it fastai, spaCy and torch) is imported when
a command runs (`_api`), so that `ulmfit --help` stays fast; `predict` on ONNX bundles imports `lite` instead,
which needs neither torch nor fastai.
"""
from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from ulmfit_cli.errors import TrainingFailed, UlmfitError
from ulmfit_cli.layout import __version__


app = typer.Typer(
    name="ulmfit",
    help="Train text classifiers the ULMFiT way: pretrain an AWD-LSTM language model, fine-tune it on "
         "your texts, train a classifier with gradual unfreezing, and sample text from any LM.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOpt = Annotated[list[Path], typer.Option(
    "--config", "-c", help="YAML config file; repeat to merge several (later files win).")]
SetOpt = Annotated[list[str], typer.Option(
    "--set", "-s", metavar="KEY=VALUE",
    help="Override one config key, e.g. --set train.lr=1e-3 (repeatable; the value is parsed as YAML).")]
RunDirOpt = Annotated[Optional[Path], typer.Option(
    "--run-dir", help="Where to write the run (default: run.dir, else runs/<run.name>).")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Replace a non-empty run dir; the old run is kept until the new one finishes.")]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="Continue the run in --run-dir from its last checkpoint (its config.yaml is used "
                     "when no --config is given).")]
PrintOpt = Annotated[bool, typer.Option(
    "--print-config", help="Print the resolved config as YAML and exit without running.")]


def command(name: str | None = None):
    """`app.command` with the docstring's first sentence as the line in `ulmfit --help` (the whole docstring
    is under `ulmfit COMMAND --help`)."""
    def register(f):
        first = " ".join(f.__doc__.split()).split(". ")[0].rstrip(".") + "."
        return app.command(name, short_help=first)(f)
    return register


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `kill`, a container stop): unwinds as Ctrl-C does, so the run says what it
    kept."""


_MAIN_PID = os.getpid()


def _on_sigterm(signum, frame):
    if os.getpid() != _MAIN_PID:  # a forked worker (tokenizer pool): die as the default handler would
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def handle_sigterm() -> None:
    """SIGTERM raises `Terminated` in this process (from the main thread only, as Python allows)."""
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (the CLI called from a thread): keep the default
        pass


def _api():
    """`ulmfit_cli.api`, imported on first use: `ulmfit --help` must not wait for fastai, spaCy and torch."""
    from ulmfit_cli import api
    return api


def _lite():
    """`ulmfit_cli.lite`, imported on first use: predict on ONNX bundles, and prepare, without torch or
    fastai."""
    from ulmfit_cli import lite
    return lite


def _server():
    """`ulmfit_cli.server` (FastAPI, uvicorn: the `serve` extra), imported on first use."""
    try:
        from ulmfit_cli import server
    except ImportError as e:
        fail(f"ulmfit serve needs the serve extra ({e}): pip install 'ulmfit-cli[serve]'")
    return server


def fail(message: str, code: int = 2):
    typer.secho(f"ulmfit: error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def _user_errors():
    """Bad input and Ctrl-C end the command with a message, never a traceback."""
    try:
        yield
    except UlmfitError as e:
        fail(str(e))
    except TrainingFailed as e:
        fail(str(e), 3)
    except Terminated:
        fail("terminated by SIGTERM", 143)
    except KeyboardInterrupt:
        fail("interrupted", 130)


def _show(title: str, figures: dict) -> None:
    typer.echo(title)
    for k, v in figures.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            typer.echo(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")


def _run_stage(stage: str, configs: list[Path], overrides: list[str], run_dir: Path | None,
               force: bool, print_config: bool, resume: bool = False, directions: str | None = None) -> None:
    api = _api()
    with _user_errors():
        if print_config:
            typer.echo(api.config_yaml(stage, configs or [], overrides or [], run_dir, resume, directions),
                       nl=False)
            return
        results = api.train(stage, configs or [], overrides or [], run_dir, force, resume,
                            directions=directions)
    if results is not None:  # rank 0 of a multi-process run reports
        pair = " (forward + backward)" if directions == "both" else ""
        _show(f"{stage} finished{pair}: {results.pop('run_dir')}", results)


DirectionsOpt = Annotated[Optional[str], typer.Option(
    "--directions", help="forward, backward (data.backwards), or both: a forward and a backward model in one "
                         "pair run dir (fwd/, bwd/), from a pair init.from_run or init.from_run + "
                         "init.from_run_backward; predict, evaluate and export take the pair as one "
                         "ensemble.")]


def _training_command(stage: str, doc: str):
    """A training stage's command (pretrain, finetune-lm, train-clf): the same options and one API call."""
    def train(config: ConfigOpt = None, set_: SetOpt = None, run_dir: RunDirOpt = None,
              force: ForceOpt = False, resume: ResumeOpt = False, print_config: PrintOpt = False,
              directions: DirectionsOpt = None):
        _run_stage(stage, config, set_, run_dir, force, print_config, resume, directions)
    train.__doc__ = doc
    return command(stage)(train)


pretrain = _training_command("pretrain", """Pretrain an AWD-LSTM language model on a Wikipedia dump or text
    files. data.source is a dump (*.xml.bz2 / *.xml), a text file, or a folder of text files (WikiText-103
    style). Writes vocab.json, lm.pth, encoder.pth, metrics.jsonl and results.json into the run dir.""")


@command()
def prepare(config: ConfigOpt = None, set_: SetOpt = None,
            force: Annotated[bool, typer.Option(
                "--force", help="Rebuild the token store even if it is cached.")] = False,
            print_config: PrintOpt = False):
    """Tokenize a pretrain config's data into a cached token store. data.source (dump, dump parts, text
    files) is read as a stream, in parallel (data.workers), into data.cache_dir; `pretrain` reuses it."""
    with _user_errors():
        if print_config:
            typer.echo(_api().config_yaml("prepare", config or [], set_ or []), nl=False)
            return
        store = _lite().prepare(config or [], set_ or [], force=force)  # without torch: seconds sooner
    _show(f"token store: {store.path}", store.stats)


@command("download-wiki")
def download_wiki(
    lang: Annotated[str, typer.Argument(help="The Wikipedia's language code: en, de, ja, zh-yue, ...")],
    date: Annotated[str, typer.Option(help="latest (the newest finished dump) or YYYYMMDD.")] = "latest",
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Folder for the dump and its index (default data/wikipedia/<wiki>-<date>).")]
    = None,
    mirror: Annotated[Optional[str], typer.Option(
        help="Another dumps site laid out as dumps.wikimedia.org (or $ULMFIT_WIKI_MIRROR).")] = None,
):
    """Download a Wikipedia's pages-articles multistream dump and its index, checked against the dump's
    published SHA-1 checksums and resumed after an interruption. Prints the size and how long `ulmfit
    prepare` will take on this machine; `ulmfit prepare` then reads the dump on every core."""
    api = _api()
    with _user_errors():
        path = api.download_wiki(lang, date, output, mirror)
    typer.echo(str(path))


finetune_lm = _training_command("finetune-lm", """Fine-tune a language model on your texts. Starts from
    init.from_run and reads data.train (CSV/TSV with data.text_col, fastText lines, or one document per
    line): one frozen epoch, then unfrozen with discriminative rates. Writes lm.pth, encoder.pth and
    vocab.json.""")
train_clf = _training_command("train-clf", """Train a classifier with gradual unfreezing. Starts from the
    encoder of init.from_run and unfreezes as train.stages says. Reads data.train (and data.valid,
    data.test) with data.text_col and data.label_col (single-label, multi-label or regression: data.task);
    reports the task's figures beside a TF-IDF baseline; writes model.pth, vocab.json, labels.json and
    results.json.""")


@command()
def tune(config: ConfigOpt = None, set_: SetOpt = None, run_dir: Annotated[Optional[Path], typer.Option(
            "--run-dir", help="The tune dir (default runs/<run.name>-tune).")] = None,
         trials: Annotated[Optional[int], typer.Option(
             "--trials", min=1, help="Trials (default search.trials).")] = None,
         force: Annotated[bool, typer.Option(
             "--force", help="Discard a previous search in the tune dir.")] = False,
         resume: Annotated[bool, typer.Option("--resume", help="Continue the search in --run-dir.")] = False):
    """Search the classifier's recipe on the validation set. Optuna trials of a train-clf config (rates,
    lr_div, drop_mult, epochs, bs: the search section's ranges), pruned early, never reading data.test;
    writes best.yaml (for train-clf --config), trials.csv and trials.png; --resume continues."""
    api = _api()
    with _user_errors():
        results = api.tune(config or [], set_ or [], run_dir, trials, force, resume)
    _show(f"tune finished: best valid {results['metric']} {results['best_value']:.4f} (trial "
          f"{results['best_trial']}); train the final model with: ulmfit train-clf --config "
          f"{results['best_config']}",
          {k: v for k, v in results.items() if k not in ("best_value", "best_trial")})


@command()
def curve(config: ConfigOpt = None, set_: SetOpt = None,
          sizes: Annotated[str, typer.Option(
              "--sizes", help="Numbers of labelled training rows, comma-separated; all: the whole training "
                              "set.")] = "50,100,200,500,1000,all",
          seeds: Annotated[int, typer.Option(
              "--seeds", min=1, help="Samples per size below the full set (each also seeds training).")] = 3,
          run_dir: Annotated[Optional[Path], typer.Option(
              "--run-dir", help="The curve dir (default runs/<run.name>-curve).")] = None,
          force: Annotated[bool, typer.Option(
              "--force", help="Discard a previous curve in the dir.")] = False,
          resume: Annotated[bool, typer.Option("--resume", help="Continue the curve in --run-dir.")] = False):
    """Draw the learning curve: what more labels would buy. At each --sizes, stratified samples of a train-clf
    config's training rows are trained from the same fine-tuned LM and scored, beside the TF-IDF baseline
    fitted on the same rows, on the same validation and test sets; writes curve.csv, curve.png and
    summary.md (where the classifier overtakes the baseline, what the last doubling bought); --resume
    continues."""
    api = _api()
    with _user_errors():
        results = api.curve(config or [], set_ or [], sizes, seeds, run_dir, force, resume)
    typer.echo(results["summary"])
    typer.echo(f"curve: {results['curve_dir']} (curve.csv, curve.png, summary.md)")


@command("lr-find")
def lr_find(
    stage: Annotated[str, typer.Argument(help="pretrain, finetune-lm or train-clf: the config's stage.")],
    config: ConfigOpt = None, set_: SetOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="The plot (PNG).")] = Path("lr-find.png"),
    phase: Annotated[Optional[int], typer.Option(
        "--phase", help="The phase to sweep, from 0: a train.stages entry (train-clf), 0 frozen / 1 unfrozen "
                        "(finetune-lm). Default: the first that trains.")] = None,
    freeze_to: Annotated[Optional[int], typer.Option(
        "--freeze-to",
        help="Freeze the classifier's layer groups before this one instead of the phase's own.")] = None,
    start_lr: Annotated[float, typer.Option("--start-lr")] = 1e-7,
    end_lr: Annotated[float, typer.Option("--end-lr")] = 10.0,
    iters: Annotated[int, typer.Option("--iters", help="Steps of the sweep (fastai's num_it).")] = 100,
):
    """Find a learning rate for a stage. fastai's lr_find on the learner the config builds (same data,
    upstream weights, freezing), with fastai's suggestions printed and the loss-against-rate plot written as
    a PNG. Writes no run dir."""
    api = _api()
    with _user_errors():
        found = api.lr_find(stage, config or [], set_ or [], output, phase, freeze_to, start_lr, end_lr,
                            iters)
    typer.echo(f"lr-find: {stage}, phase {found['phase']} ({found['setup']}); the config trains it at "
               f"{found['config_lr']:.2e}")
    for name, lr in found["suggestions"].items():
        typer.echo(f"  {name:<8} " + ("n/a (too few steps before the loss diverged; more --iters or a lower "
                                      "--end-lr)" if lr is None else f"{lr:.2e}")
                   + ("  (fastai's default suggestion)" if name == "valley" and lr is not None else ""))
    typer.echo(f"plot: {output}")


@command()
def generate(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="A pretrain or finetune-lm run dir.")],
    prompt: Annotated[str, typer.Option(help="Text the samples start with.")] = "",
    n_words: Annotated[int, typer.Option(help="Tokens to generate per sample (at most 10,000).")] = 40,
    temperature: Annotated[float, typer.Option(
        min=0.01, help="Below 1: safer words; above 1: wilder.")] = 1.0,
    n_samples: Annotated[int, typer.Option(min=1, help="How many samples to print.")] = 1,
    seed: Annotated[Optional[int], typer.Option(
        help="Random seed; the same seed gives the same text.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
):
    """Sample text from a language model run. As fastai's predict: temperature, never xxunk."""
    api = _api()
    with _user_errors():
        texts = api.generate(run_dir, prompt, n_words, temperature, n_samples, seed, device)
    for i, text in enumerate(texts):
        typer.echo(f"[{i + 1}] {text}" if n_samples > 1 else text)


ModelOpt = Annotated[list[Path], typer.Option(
    "--model", "-m", help="A train-clf run dir or an `ulmfit export` bundle; repeat to average an ensemble "
                          "(e.g. the forward and the backward classifier).")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
PrecisionOpt = Annotated[str, typer.Option(help="fp32, or fp16/bf16 autocast on a GPU.")]
BatchOpt = Annotated[int, typer.Option("--bs", min=1, help="Texts per batch at most.")]
EncodingOpt = Annotated[str, typer.Option(help="Text encoding of the input file.")]


InputFormatOpt = Annotated[Optional[str], typer.Option(
    "--input-format", help="csv, tsv, jsonl, fasttext or lines (default: from the file's suffix; for - from "
                           "the first line: a header naming --text-col, a JSON object, a __label__).")]


TextColOpt = Annotated[Optional[str], typer.Option(
    "--text-col", help="Column(s) holding the texts, comma-separated for several fields (default: what the "
                       "model was trained on, data.text_col).")]


def _columns(option: str):
    """A --text-col/--label-col option as the config key would be (`title,body` -> [title, body])."""
    cols = [c.strip() for c in option.split(",")]
    return cols if len(cols) > 1 else cols[0]


@command()
def predict(
    model: ModelOpt,
    input: Annotated[str, typer.Option("--input", "-i", help="CSV/TSV/JSONL table, fastText or text file "
                                                             "(one text per line); - reads stdin.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="preds.csv/.tsv/.jsonl; - writes stdout.")]
    = Path("preds.csv"),
    text_col: TextColOpt = None,
    input_format: InputFormatOpt = None,
    bs: BatchOpt = 128,
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", min=1, help="Token slots per batch at most (texts x the longest): batches of long "
                                    "texts hold fewer texts. On a GPU, larger batches pay.")] = 8_192,
    device: DeviceOpt = "auto", precision: PrecisionOpt = "fp32",
    encoding: EncodingOpt = "utf-8",
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="CPU threads (default: the library's choice; 1 per process when several run side by "
                    "side).")] = None,
    runtime: Annotated[str, typer.Option(
        help="auto (onnxruntime for bundles exported with --format onnx, PyTorch otherwise), onnx or "
             "torch.")] = "auto",
    explain: Annotated[bool, typer.Option(
        "--explain", help="Add an `explanation` column: the words that drove each prediction and their "
                          "scores (JSONL: every token's). Needs PyTorch and Captum; docs/explain.md.")
    ] = False,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Words per --explain cell.")] = 5,
    explain_method: Annotated[str, typer.Option(
        "--explain-method", help="ig (Integrated Gradients), grad_input (gradient x input, ~50x cheaper) "
                                 "or intrinsic (fastai v1's unsigned |gradient|).")] = "ig",
):
    """Classify texts. Writes the input rows plus `prediction` and one `prob_<class>` column per class
    (multi-label: the predicted labels joined by the model's data.label_delim, or ';'; regression: the
    number). ONNX bundles run on onnxruntime, without importing torch or fastai."""
    cols = None if text_col is None else _columns(text_col)
    with _user_errors():
        lite = _lite()
        method = explain_method if explain else None
        if lite.chooses_onnx(model, runtime, device) and precision == "fp32":
            df = lite.predict(model, input, output, cols, input_format, bs, encoding, threads, max_tokens,
                              method, top_k)
        else:
            df = _api().predict(model, input, output, cols, input_format, bs, device, precision, encoding,
                                threads, runtime, max_tokens, method, top_k)
    if str(output) != "-":
        typer.echo(f"{len(df):,} predictions written to {output}", err=True)


@command()
def evaluate(
    model: ModelOpt,
    input: Annotated[str, typer.Option("--input", "-i", help="A labelled CSV/TSV/JSONL table or fastText "
                                                             "file; - reads stdin.")],
    text_col: TextColOpt = None,
    label_col: Annotated[Optional[str], typer.Option(
        help="Column(s) holding the true labels, comma-separated for multi-label 0/1 columns (default: the "
             "model's data.label_col).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for report.json, report.html and "
                                                               "confusion.png.")]
    = Path("evaluation"),
    input_format: InputFormatOpt = None,
    baseline: Annotated[bool, typer.Option(
        "--baseline/--no-baseline", help="Also refit the TF-IDF baseline on the (first) model's training "
                                         "split and score it on the same input (a run dir whose data is "
                                         "still there; not a bundle).")] = True,
    bs: BatchOpt = 64, device: DeviceOpt = "auto", precision: PrecisionOpt = "fp32",
    encoding: EncodingOpt = "utf-8",
    explain: Annotated[bool, typer.Option(
        "--explain/--no-explain", help="Highlight the words of report.html's shown texts by their "
                                       "attributions (Captum; --no-explain skips them).")] = True,
):
    """Score classifiers on a labelled file. Accuracy, macro-F1, per-class figures and confusion matrix;
    multi-label micro/macro-F1, subset accuracy, ROC-AUC, per-label figures; regression MAE, RMSE,
    Pearson, Spearman; beside the TF-IDF baseline refitted on the model's training split."""
    api = _api()
    with _user_errors():
        report, written = api.evaluate(model, input, output, None if text_col is None else _columns(text_col),
                                       None if label_col is None else _columns(label_col), input_format,
                                       baseline, bs, device, precision, encoding, explain)
    typer.echo(api.report_text(report))
    typer.echo(f"\nreport: {', '.join(map(str, written))}")


@command()
def export(
    model: Annotated[Path, typer.Option("--model", "-m", help="A train-clf run dir, or a language-model run "
                                                             "(pretrain, finetune-lm, import-lm).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the bundle.")],
    format: Annotated[str, typer.Option("--format", help="ulmfit: a pickle-free bundle that predict, "
                                                         "load_classifier or init.from_run take; onnx: that "
                                                         "bundle plus model.onnx, which predicts without "
                                                         "torch or fastai (docs/deploying.md); fastai: a "
                                                         "language model as fastai's pretrained_fnames "
                                                         "loads it (lm.pth, lm_vocab.pkl).")] = "ulmfit",
    quantize: Annotated[Optional[str], typer.Option(
        "--quantize", help="int8 (--format onnx): onnxruntime's dynamic quantization, kept only if the "
                           "validation figure stays within 0.5 points of fp32's (needs the run's "
                           "data).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --output.")] = False,
):
    """Write a self-contained bundle of a classifier or a language model. A classifier bundle is a
    weights-only state dict and vocab/labels/settings as JSON with a model card (card.json), which `ulmfit
    predict --model` and `ulmfit_cli.load_classifier` accept; a language-model bundle is what `init.from_run`
    and `generate` take."""
    api = _api()
    with _user_errors():
        out = api.export(model, output, force, format, quantize)
    typer.echo(f"bundle written to {out}")


@command()
def serve(
    model: ModelOpt,
    host: Annotated[str, typer.Option(
        help="Address to listen on; anything but loopback wants --api-key-file.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    max_batch_tokens: Annotated[int, typer.Option(
        "--max-batch-tokens", min=1,
        help="Tokens per model batch at most: concurrent requests are merged up to this or --max-wait-ms.")]
    = 8_192,
    max_wait_ms: Annotated[float, typer.Option(
        "--max-wait-ms", min=0,
        help="How long a batch waits for more requests (0: it takes those that queued while the model ran).")]
    = 0.0,
    batching: Annotated[bool, typer.Option(
        "--batching/--no-batching", help="Merge concurrent requests (micro-batching).")] = True,
    max_queue: Annotated[int, typer.Option(
        "--max-queue", min=1, help="Requests waiting at most; more get 503 with Retry-After.")] = 256,
    max_texts: Annotated[int, typer.Option(
        "--max-texts", min=1, help="Texts per request at most (413).")] = 64,
    max_chars: Annotated[int, typer.Option(
        "--max-chars", min=1, help="Characters per text at most (413).")] = 10_000,
    api_key_file: Annotated[Optional[Path], typer.Option(
        "--api-key-file", help="A file whose first line is the key clients send ('Authorization: Bearer KEY' "
                               "or 'X-API-Key'); never on the command line.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads of the model.")] = None,
    runtime: Annotated[str, typer.Option(
        help="auto (onnxruntime for ONNX bundles), onnx or torch.")] = "auto",
    workers: Annotated[int, typer.Option(
        min=1, help="Server processes, each with the model loaded once.")] = 1,
):
    """Serve classifiers over HTTP: POST /v1/predict, /health/live, /health/ready, /v1/info, /metrics, /docs,
    and a page to try the model at /. Several --model flags (or a forward+backward pair): their ensemble.
    SIGTERM finishes the requests in flight and exits 0. docs/serving.md has the details."""
    server = _server()
    with _user_errors():
        settings = server.ServeSettings(models=[str(m) for m in model], max_batch_tokens=max_batch_tokens,
                                        max_wait_ms=max_wait_ms, batching=batching, max_queue=max_queue,
                                        max_texts=max_texts, max_chars=max_chars,
                                        api_key=server.read_key(api_key_file), threads=threads,
                                        runtime=runtime)
        if settings.api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
            typer.secho(f"warning: serving on {host} without --api-key-file: anyone who reaches this address "
                        f"can use the model", fg=typer.colors.YELLOW, err=True)
        server.serve(settings, host, port, workers)


@command("import-lm")
def import_lm(
    source: Annotated[str, typer.Argument(help="wt103-fwd, wt103-bwd (fetched with fastai, online), or a "
                                               "folder or .tgz/.tar.gz/.zip with a fastai *.pth and its "
                                               "vocabulary (*.pkl or JSON), or a fastai_ulmfit archive "
                                               "(fwd/, bwd/, spm/).")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="The run dir to write (e.g. runs/wt103-fwd).")],
    backwards: Annotated[Optional[bool], typer.Option(
        "--backwards/--forwards", help="The model's direction (fastai_ulmfit: which of fwd/ and bwd/; a "
                                       "plain folder: how it was trained; default forwards).")] = None,
    force: ForceOpt = False,
):
    """Import a published AWD-LSTM language model. fastai's WT103 or any fastai-format LM becomes a run
    dir (config.yaml with the sizes read from the weights, vocab.json, lm.pth, encoder.pth) that
    finetune-lm, train-clf and generate take through init.from_run. Nothing is unpickled except a plain
    list of tokens; weights load weights-only."""
    api = _api()
    with _user_errors():
        results = api.import_lm(source, output, backwards, force)
    _show(f"imported {source}: {output}", results)


@command()
def report(run_dir: Annotated[Path, typer.Argument(help="A training run dir, or an export bundle.")]):
    """Print a run's figures (per-epoch losses, perplexity/accuracy, tokens/s, time, final results), or a
    bundle's model card."""
    api = _api()
    with _user_errors():
        typer.echo(api.report(run_dir))


def _version(value: bool):
    if value:
        typer.echo(f"ulmfit-cli {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False):
    handle_sigterm()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
