"""The names of everything ulmfit writes, in one place (as accelerate's `MODEL_NAME` constants and torchtune's
checkpoint keys): the files of a run dir, a classifier bundle, a forward+backward pair, a tune dir and an
evaluation folder; which stages hold a language model; and the package version that every run dir and
bundle records (pyproject.toml is its one source). Plain constants: nothing here imports the package.

    runs/NAME/                       a training run dir (`ulmfit_cli.runs`)
      config.yaml  vocab.json  labels.json  thresholds.json  tokenizer.model
      blend.json  baseline.json  baseline.npz                     (a blend with the baseline)
      lm.pth  encoder.pth  model.pth  results.json  metrics.jsonl
      checkpoints/last.pt  checkpoints/best.pt  plots/loss.png  plots/lr.png
    PAIR/  directions.json  fwd/  bwd/  results.json              (`--directions both`)
    BUNDLE/  classifier.json  model.pth  vocab.json  labels.json  card.json  (`ulmfit export`)
             model.onnx                                            (`--format onnx`)
"""
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("ulmfit-cli")
except PackageNotFoundError:  # run from a source tree that was never installed (PYTHONPATH=.)
    __version__ = "0+unknown"

# ---------------------------------------------------------------- a run dir
CONFIG = "config.yaml"          # the resolved config, written first (`_meta`: stage, version, argv)
VOCAB = "vocab.json"            # the vocabulary, a JSON list of tokens
LABELS = "labels.json"          # a classifier's outputs: class names, label names, or the regression target
THRESHOLDS = "thresholds.json"  # a multi-label model's {label: threshold}, in its run dir and bundle
BLEND = "blend.json"            # {weight}: predictions mix the classifier and the baseline (model.blend)
BASELINE = "baseline.json"      # the fitted TF-IDF baseline a blend mixes in: settings and vocabularies
BASELINE_ARRAYS = "baseline.npz"  # ... and its idf weights, coefficients and intercepts (no pickle)
PSEUDO_LABELS = "pseudo_labels.csv"  # self-training: the unlabelled texts the kept round trained on
SP_MODEL = "tokenizer.model"    # a SentencePiece model, in a token store or run dir that uses one
LM_WEIGHTS = "lm.pth"           # the whole language model (plain state dict)
ENCODER = "encoder.pth"         # its encoder, what train-clf starts from
CLASSIFIER = "model.pth"        # a classifier's weights
RESULTS = "results.json"        # the stage's final figures
METRICS = "metrics.jsonl"       # one JSON line per epoch
CHECKPOINTS = "checkpoints"     # folder: LAST_CHECKPOINT, BEST_CHECKPOINT
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
PLOTS = "plots"                 # folder: LOSS_PLOT, LR_PLOT
LOSS_PLOT = "loss.png"
LR_PLOT = "lr.png"
TENSORBOARD = "tensorboard"     # folder of event files (run.loggers: [tensorboard])

# what each kind of run dir holds, by the stage that wrote it (`_meta.stage`; the stages: `recipes.STAGES`)
PRETRAIN_STAGE = "pretrain"     # also what `ulmfit import-lm` writes
LM_STAGES = (PRETRAIN_STAGE, "finetune-lm")  # a language model: init.from_run of finetune-lm and train-clf
CLASSIFIER_STAGE = "train-clf"
LM_BUNDLE_FILES = (CONFIG, VOCAB, LM_WEIGHTS, ENCODER, RESULTS)  # an LM run without checkpoints or logs

# ---------------------------------------------------------------- a forward+backward pair
PAIR = "directions.json"        # marks a pair run dir or bundle (`--directions both`)
MEMBERS = (("fwd", False), ("bwd", True))  # (member folder, backwards), forward first

# ---------------------------------------------------------------- an export bundle
BUNDLE = "classifier.json"      # marks a classifier bundle: format, version, source, spec
BUNDLE_FORMAT = 1
ONNX_MODEL = "model.onnx"       # the classifier as an ONNX graph (`export --format onnx`), beside model.pth
CARD = "card.json"              # the model card: task, labels, data digests, figures, upstream LM, versions

# ---------------------------------------------------------------- a tune dir
SEARCH = "search.yaml"          # the search's config, what --resume reads
STUDY = "study.db"              # Optuna's SQLite storage
TRIALS_TABLE = "trials.csv"
TRIALS_PLOT = "trials.png"
BEST_CONFIG = "best.yaml"       # a train-clf config with the best trial's values
TRIALS = "trials"               # folder of the running trial's run dir

# ---------------------------------------------------------------- a curve dir (`ulmfit curve`)
CURVE_CONFIG = "curve.yaml"     # the curve's config, what --resume reads
CURVE_PLAN = "curve.json"       # its sizes and seeds
CURVE_TABLE = "curve.csv"       # a row per point (size, seed): the classifier's, baseline's, blend's figures
CURVE_PLOT = "curve.png"
CURVE_SUMMARY = "summary.md"
SAMPLES = "samples"             # folder: the training rows of each point (CSV), and the validation rows
POINTS = "points"               # folder of the running point's run dir

# ---------------------------------------------------------------- an evaluate folder
REPORT = "report.json"
REPORT_PAGE = "report.html"
CONFUSION_PLOT = "confusion.png"
PROBABILITIES = "probabilities.npy"  # predictions.npy for regression
PREDICTIONS = "predictions.npy"


def sp_model_in(folder: Path) -> Path | None:
    """The SentencePiece model a token store, run dir or bundle was made with, if any."""
    return folder / SP_MODEL if (folder / SP_MODEL).is_file() else None
