"""Typed configs for each stage, YAML loading with `--set` overrides, and readable errors.

Precedence: code defaults < `--config a.yaml --config b.yaml` (later wins) < `--set k=v`.
Defaults follow the ULMFiT paper (Howard & Ruder 2018) and fastai 2.8 where they differ. Every
model is frozen: `ulmfit_cli.resolve` makes the final config once (sizes from `init.from_run`, the
run dir, the device and precision that will run) and nothing changes it after. A classifier config
is checked by its task's rules (`classify.task`, the one import back up the layers); `derive` makes a
config from another in code.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import PKG_PREFIX, reads
from ulmfit_cli.classify.task import SINGLE_LABEL, TASKS, Task, task_of  # the one import back up the layers

# what train.monitor may name: the figures of every task
FIGURES = tuple(dict.fromkeys(m for task in TASKS.values() for m in task.monitors))
META_KEY = "_meta"  # a run's config.yaml keeps stage/version/argv here; ignored when loaded back
REQUESTED = "requested"  # under _meta: values the user asked for (run.device: auto) before they were resolved


def _admits_bool(annotation) -> bool:
    return annotation is bool or any(_admits_bool(a) for a in get_args(annotation))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # train.lr=.inf is a typo too

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value, info):
        # pydantic reads `true` as 1 for an int field (`train.bs: true`): a typo, never meant; refuse it
        if isinstance(value, bool) and not _admits_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number or text, not {str(value).lower()}")
        return value


# ---------------------------------------------------------------- shared sections
class RunSection(Section):
    name: str = Field("run", description="run name; the run dir defaults to runs/<name>")
    dir: str | None = Field(None, description="run directory (default runs/<name>)")
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    distributed: Literal["auto", "off"] = Field(
        "auto", description="auto: one process of a multi-process run when started by "
                            "torchrun/accelerate launch")
    dist_timeout: int = Field(300, gt=0, description="seconds a process waits for the others before failing")
    loggers: list[Literal["tensorboard"]] = Field(
        default_factory=list, description="tensorboard: fastai's TensorBoardCallback writes event files into "
                                          "<run dir>/tensorboard (pip install 'ulmfit-cli[tensorboard]')")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for PyTorch (default: its own choice, printed at start), also "
                                "when a classifier run predicts (unless --threads); 1 on a machine shared "
                                "with other jobs")
    deterministic: bool = Field(
        False, description="PyTorch's deterministic algorithms (and cuBLAS workspace) on GPU: reproducible, "
                           "slower; CPU runs are deterministic anyway")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: fp16 autocast with loss scaling on a GPU, fp32 on CPU; bf16 leaves the "
                           "LSTM's fp16 gradients unscaled")


class InitSection(Section):
    from_run: str | None = Field(
        None, description="upstream run directory whose weights and vocab to start from")
    from_run_backward: str | None = Field(
        None, description="with --directions both: the backward upstream run (default: the bwd member of a "
                          "forward+backward init.from_run)")


ARCH_KEYS = ("emb_sz", "n_hid", "n_layers")


class Arch(Section):
    """AWD-LSTM size. Downstream stages leave these unset to take them from `init.from_run`."""
    emb_sz: int | None = Field(None, gt=0)
    n_hid: int | None = Field(None, gt=0)
    n_layers: int | None = Field(None, ge=1)

    def sizes(self) -> dict:
        """{emb_sz, n_hid, n_layers}: what fastai's AWD-LSTM config takes."""
        return {k: getattr(self, k) for k in ARCH_KEYS}


class PretrainModel(Arch):
    emb_sz: int = Field(400, gt=0)
    n_hid: int = Field(1152, gt=0)       # paper 1150; fastai 1152
    n_layers: int = Field(3, ge=1)
    drop_mult: float = Field(1.0, ge=0)  # scales fastai's LM dropouts (0.1, 0.15, 0.25, 0.02, 0.2)


class FinetuneModel(Arch):
    drop_mult: float = Field(1.0, ge=0)


class ClassifierModel(Arch):
    drop_mult: float = Field(0.5, ge=0)  # scales fastai's classifier dropouts (0.4, 0.3, 0.4, 0.05, 0.5)
    lin_ftrs: list[int] = Field(
        default_factory=lambda: [50], description="hidden sizes of the concat-pooling head")
    max_len: int = Field(
        72 * 20, gt=0, description="tokens of each document the classifier reads (the last ones)")
    threshold: float | None = Field(
        None, gt=0, lt=1, description="multi-label: the probability above which a label is predicted, for "
                                      "every label (default: one per label, chosen on the validation set)")
    y_range: tuple[float, float] | None = Field(
        None, description="regression: outputs squashed into (low, high) by fastai's "
                          "sigmoid_range, e.g. [0, 5.5]")
    blend: Literal["auto", "off"] | float = Field(
        "auto", description="auto: predictions are w * classifier + (1 - w) * baseline, w chosen on the "
                            "validation split from 0, 0.05, ... 1 (with data.baseline); a number in [0, 1] "
                            "fixes w; off: the classifier alone")

    @field_validator("blend", mode="before")
    @classmethod
    def _off(cls, value):
        # YAML reads a bare `off` as false (and `on` as true)
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("blend")
    @classmethod
    def _weight(cls, value):
        if not isinstance(value, str) and not 0 <= value <= 1:
            raise ValueError("a blend weight is in [0, 1] (1: the classifier alone, 0: the baseline alone)")
        return value

    @field_validator("y_range")
    @classmethod
    def _ordered(cls, value):
        if value is not None and not value[0] < value[1]:
            raise ValueError("y_range is [low, high] with low < high")
        return value


class Encoded(Section):
    encoding: str = Field("utf-8", description="text encoding of the input files, e.g. cp1252 or latin-1")
    encoding_errors: Literal["strict", "replace"] = Field(
        "strict", description="strict: bytes that are not valid in data.encoding stop the run (naming file "
                              "and byte offset); replace: they become U+FFFD and are counted")

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        import codecs
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        return value


LANG_HELP = ("spaCy language of the word tokenizer (fastai's SpacyTokenizer(lang=...)), e.g. en, de, fr; "
             "downstream stages take it from init.from_run")


class TextData(Encoded):
    lang: str | None = Field(None, description=LANG_HELP + "; without init.from_run: en")
    text_col: str | int | list[str | int] = Field(
        "text", min_length=1, description="the text column: a name, a position (from 0), or a list of them, "
                                          "joined with fastai's field marks (xxfld 1 ... xxfld 2 ...)")
    valid_pct: float = Field(0.1, gt=0, lt=1)
    workers: int | None = Field(
        None, ge=0, description="tokenizer processes (default: all cores; 0 = in-process)")


class Direction(Section):
    backwards: bool = Field(
        False, description="train on reversed token streams (the backward model of ULMFiT's forward+backward "
                           "ensemble); every stage of a chain must agree")


class VocabData(Direction):
    max_vocab: int = Field(60000, gt=0)
    min_freq: int = Field(3, ge=1)


class PretrainData(VocabData, Encoded):
    lang: str = Field("en", description=LANG_HELP)
    source: str = Field(
        description="Wikipedia pages-articles dump (.xml/.xml.bz2), a text file or a folder of text files")
    valid_pct: float = Field(0.1, gt=0, lt=1, description="share of articles held out for validation")
    max_docs: int | None = Field(None, gt=0, description="use only the first N articles/documents")
    min_doc_chars: int = Field(0, ge=0, description="drop dump articles with less clean text than this")
    workers: int | None = Field(
        None, ge=0, description="worker processes (default: all cores; 0 = in-process)")
    cache_dir: str | None = Field(None, description="where token stores are kept and reused "
                                                    "(default: $ULMFIT_CACHE, else ~/.cache/ulmfit)")
    keep_truncated: bool = Field(
        False, description="keep the complete pages of a truncated dump instead of failing")
    tokenizer: Literal["spacy", "sentencepiece"] = Field(
        "spacy", description="spacy: fastai's word tokenizer; sentencepiece: fastai's subword "
                             "tokenizer, trained here")
    sp_vocab_size: int | None = Field(
        None, gt=8, description="SentencePiece vocab (default: fastai's rule of thumb)")
    sp_train_chars: int = Field(50_000_000, gt=0, description="text the SentencePiece model is trained on")


class FinetuneData(VocabData, TextData):
    train: str
    valid: str | None = None
    extra_text: list[str] = Field(
        default_factory=list, description="more files of target-domain text for the LM's training split, "
                                          "labels unused (e.g. a classifier's unlabelled or test "
                                          "texts: transductive)")


class ClassifierData(VocabData, TextData):
    """max_vocab/min_freq apply only without init.from_run (the classifier otherwise uses that run's
    vocab)."""
    max_chars: int = Field(
        100_000, gt=0, description="longer documents keep only their last max_chars characters (the "
                                   "classifier reads the end: model.max_len)")
    train: str
    valid: str | None = None
    test: str | None = None
    task: Literal[("auto", *TASKS)] = Field(
        "auto", description="auto: multi_label when data.label_col is a list or data.label_delim is set, "
                            "else single_label; regression: a numeric data.label_col")
    label_col: str | list[str] = Field("label", min_length=1, description="the label column; multi-label: a "
                                                                         "list of 0/1 columns, one per label")
    label_delim: str | None = Field(
        None, min_length=1, description="multi-label: data.label_col holds each document's labels "
                                        "joined by this, e.g. ';'")
    baseline: bool = Field(True, description="also fit TF-IDF + logistic regression on the same splits and "
                                             "report it beside the classifier (baseline_* in results.json)")
    min_valid: int = Field(
        100, ge=1, description="a validation split made from data.train (valid_pct) has at least this many "
                               "documents, but at most a quarter of data.train; a smaller validation "
                               "split, made or given, is warned about")
    unlabelled: list[str] = Field(
        default_factory=list, description="files of unlabelled texts (one per line, or a table with "
                                          "data.text_col) for self-training (train.self_training_rounds); "
                                          "never the validation or test texts")


class TrainSection(Section):
    """What every training stage's `train` section has."""
    bs: int = Field(64, gt=0)
    bptt: int = Field(72, gt=0)     # paper 70; fastai 72
    wd: float = Field(0.01, ge=0)
    moms: tuple[float, float, float] = (0.8, 0.7, 0.8)
    optimizer: Literal["fastai", "torch"] = Field(
        "torch", description="torch: PyTorch's AdamW kernels; fastai: fastai's Adam (same "
                             "update rule, slower)")
    checkpoint_every: int | None = Field(
        None, gt=0, description="also checkpoint every N training steps (checkpoints are always "
                                "written at epoch ends)")
    checkpoint_minutes: float | None = Field(
        30.0, gt=0, description="also checkpoint after this many minutes without one")


class LMTrain(TrainSection):
    epochs: int = Field(10, ge=0)
    lr: float = Field(1e-2, gt=0)
    loader: Literal["fastai", "stream"] = Field(
        "stream", description="stream: the AWD-LSTM batchify, kept on the device; "
                              "fastai: fastai's LMDataLoader (documents shuffled each epoch)")
    random_bptt: bool = Field(
        False, description="AWD-LSTM's random window lengths (stream loader): bptt, or bptt/2 one time in "
                           "20, plus N(0, 5); lr scaled by length/bptt")


class FinetuneTrain(LMTrain):
    frozen_epochs: int = Field(1, ge=0, description="epochs with only the last layer group trainable")
    frozen_lr: float = Field(1e-2, gt=0)
    lr: float = Field(1e-3, gt=0)
    lr_div: float = Field(2.6 ** 4, ge=1, description="unfrozen rates are slice(lr / lr_div, lr)")


class UnfreezeStage(Section):
    freeze_to: int = Field(
        description="layer groups before this index stay frozen (-1: head only, 0: all trainable)")
    epochs: int | None = Field(None, ge=1, description="default: train.epochs")
    lr: float | None = Field(None, gt=0, description="default: train.lr")


def _small_data_unfreezing() -> list[UnfreezeStage]:
    # Gradual unfreezing as in the paper (head, two more groups, everything), with the rates and the longer
    # last stage chosen on TREC-6's validation split and kept on SST-2's dev set (docs/results.md): fastai's
    # IMDb recipe (last stage 2 epochs at 1e-3, lr_div 2.6**4) undertrains a small set's classifier
    # (TREC-6: 79.2 % against 91.6 % test). configs/imdb/train-clf.yaml keeps fastai's.
    return [UnfreezeStage(freeze_to=-1, lr=2e-2), UnfreezeStage(freeze_to=-2, lr=1e-2),
            UnfreezeStage(freeze_to=-3, lr=1e-2), UnfreezeStage(freeze_to=0, lr=1e-2, epochs=5)]


class ClassifierTrain(TrainSection):
    bs: int = Field(32, ge=2, description="the head's BatchNorm needs at least 2 documents per batch")
    epochs: int = Field(1, ge=1, description="epochs of a stage that names none")
    lr: float = Field(2e-2, gt=0, description="rate of a stage that names none")
    lr_div: float = Field(
        2.6, ge=1, description="each stage trains with slice(lr / lr_div, lr) (fastai's recipe: 2.6**4)")
    stages: list[UnfreezeStage] = Field(default_factory=_small_data_unfreezing, min_length=1)
    class_weights: Literal["balanced"] | dict[str, float] | None = Field(
        None, description="weighted cross-entropy: balanced (n / (classes * count), as scikit-learn's), or "
                          "{label: weight} (labels not named weigh 1)")
    sampler: Literal["shuffle", "balanced"] = Field(
        "shuffle", description="balanced: each epoch draws its training documents with replacement, every "
                               "class equally often (fastai's weighted_dataloaders)")
    monitor: Literal[("auto", *FIGURES)] = Field(
        "auto", description="the validation figure that picks the best epoch (checkpoints/best.pt): auto "
                            "(the task's: accuracy, micro_f1 for multi-label, rmse for regression), "
                            "valid_loss; single-label accuracy, macro_f1; multi-label macro_f1, "
                            "micro_f1; regression mae, rmse, pearson, spearman")
    keep: Literal["last", "best"] = Field("best", description="the epoch model.pth holds: the best by "
                                                             "train.monitor, or the last one")
    patience: int | None = Field(None, ge=1, description="stop the stage after this many epochs without a "
                                                         "better train.monitor (counted across train.stages)")
    min_steps: int | None = Field(
        400, ge=1, description="a small training set trains at least this many steps: each epoch goes "
                                "over the training documents as many times as that takes (the epochs, and "
                                "the validations that pick the best one, stay as given)")
    self_training_rounds: int | None = Field(
        None, ge=0, description="rounds of self-training on data.unlabelled (else the fine-tuned LM's "
                                "data.extra_text): the classifier labels them, the confident ones join the "
                                "training set, and it is trained again from the encoder (default: 1 with "
                                "data.unlabelled, else 0)")
    self_training_top: float = Field(
        0.5, gt=0, le=1, description="the share of each predicted class's unlabelled texts a round keeps, "
                                     "most confident first (so the classes stay balanced)")


class SearchSection(Section):
    """`ulmfit tune`: the ranges searched on the validation set (null: keep the config's value)."""
    trials: int = Field(20, ge=1, description="trials of the search (--trials overrides)")
    metric: Literal[("auto", *FIGURES[1:])] = Field(
        "auto", description="the validation figure a trial is scored by (auto: accuracy, micro_f1 for "
                            "multi-label, rmse for regression)")
    lr_scale: tuple[float, float] | None = Field(
        (0.25, 4.0), description="every stage's rate multiplied by a factor from this range (log scale)")
    lr_div: tuple[float, float] | None = Field((1.0, 2.6 ** 4), description="train.lr_div (log scale)")
    drop_mult: tuple[float, float] | None = Field((0.1, 1.0), description="model.drop_mult")
    epochs: tuple[int, int] | None = Field((2, 8), description="epochs of the last train.stages entry")
    early_epochs: tuple[int, int] | None = Field(
        (1, 2), description="epochs of each earlier train.stages entry")
    bs: list[int] | None = Field(default_factory=lambda: [16, 32, 64], description="train.bs, one of these")
    prune: bool = Field(True, description="stop trials whose validation figure lags the median of earlier "
                                          "trials at the same epoch (Optuna's MedianPruner)")

    @field_validator("lr_scale", "lr_div", "drop_mult", "epochs", "early_epochs")
    @classmethod
    def _range(cls, value, info):
        # refused here, naming the key, rather than by Optuna or by every trial's config, mid-search
        if value is None:
            return value
        low, high = value
        if low > high:
            raise ValueError("a range is [low, high] with low <= high")
        name = info.field_name
        if name == "lr_scale" and low <= 0:
            raise ValueError("sampled on a log scale: both ends must be above 0")
        if name == "lr_div" and low < 1:
            raise ValueError("train.lr_div is at least 1 (and sampled on a log scale)")
        if name == "drop_mult" and not 0 <= low <= high < 2:  # the largest base dropout is 0.5
            raise ValueError("model.drop_mult scales dropout probabilities up to 0.5: the range must lie "
                             "within [0, 2)")
        if name in ("epochs", "early_epochs") and low < 1:
            raise ValueError("a stage trains at least 1 epoch")
        return value

    @field_validator("bs")
    @classmethod
    def _batch_sizes(cls, value):
        if value is not None and not value:  # it used to turn the bs search off without a word
            raise ValueError("an empty list searches no batch size; use null to keep train.bs")
        if value and min(value) < 2:
            raise ValueError("each batch size must be at least 2 (train.bs: the head's BatchNorm needs 2)")
        return value


# ---------------------------------------------------------------- stage configs
class StageConfig(Section):
    """What every stage's config has: the run section (name, dir, seed, device, precision, ...)."""
    run: RunSection = Field(default_factory=RunSection)


class PretrainConfig(StageConfig):
    """`ulmfit pretrain`: a language model from random weights on a dump or text files."""
    data: PretrainData
    model: PretrainModel = Field(default_factory=PretrainModel)
    train: LMTrain = Field(default_factory=LMTrain)


class FinetuneConfig(StageConfig):
    """`ulmfit finetune-lm`: the language model of `init.from_run` (or a new one) fine-tuned on the target
    texts."""
    data: FinetuneData
    init: InitSection = Field(default_factory=InitSection)
    model: FinetuneModel = Field(default_factory=FinetuneModel)
    train: FinetuneTrain = Field(default_factory=FinetuneTrain)


class ClassifierConfig(StageConfig):
    data: ClassifierData = Field(description="the labelled files and how to read them")
    init: InitSection = Field(default_factory=InitSection)
    model: ClassifierModel = Field(default_factory=ClassifierModel)
    train: ClassifierTrain = Field(default_factory=ClassifierTrain)
    search: SearchSection = Field(default_factory=SearchSection)

    @property
    def task(self) -> Task:
        """The classifier's task (`data.task: auto` decided)."""
        return task_of(self.data.task, self.data.label_col, self.data.label_delim)

    @model_validator(mode="after")
    def _consistent(self):
        d = self.data
        cols = d.text_col if isinstance(d.text_col, list) else [d.text_col]
        label_cols = d.label_col if isinstance(d.label_col, list) else [d.label_col]
        if set(label_cols) & set(cols):
            raise ValueError("data.label_col: names the same column as data.text_col")
        if not d.baseline and not isinstance(self.model.blend, str):
            raise ValueError("model.blend: a fixed weight mixes in the baseline, which data.baseline: false "
                             "turns off")
        self.task.check_config(d, self.model, self.train)
        return self


class ArchSizes(Section):
    emb_sz: int = Field(gt=0)
    n_hid: int = Field(gt=0)
    n_layers: int = Field(ge=1)


class ClassifierSpec(Section):
    """What rebuilds a trained classifier for inference: taken from a train-clf run's resolved config,
    and stored as the `spec` of an export bundle's classifier.json."""
    arch: ArchSizes
    drop_mult: float = Field(ge=0)
    lin_ftrs: list[int]
    max_len: int = Field(gt=0)
    bptt: int = Field(gt=0)
    backwards: bool
    max_chars: int = Field(gt=0)
    lang: str = "en"  # bundles written before data.lang existed are English
    text_col: str | int | list[str | int] = "text"  # what predict and evaluate read when not told
    task: Literal[tuple(TASKS)] = SINGLE_LABEL.name  # bundles written before tasks existed: single-label
    label_col: str | list[str] = "label"  # what evaluate reads when not told
    label_delim: str | None = None
    y_range: tuple[float, float] | None = None

    @classmethod
    def of(cls, cfg: "ClassifierConfig") -> "ClassifierSpec":
        return cls(arch=ArchSizes(**cfg.model.sizes()), drop_mult=cfg.model.drop_mult,
                   lin_ftrs=cfg.model.lin_ftrs, max_len=cfg.model.max_len, bptt=cfg.train.bptt,
                   backwards=cfg.data.backwards, max_chars=cfg.data.max_chars, lang=cfg.data.lang or "en",
                   text_col=cfg.data.text_col, task=cfg.task.name, label_col=cfg.data.label_col,
                   label_delim=cfg.data.label_delim, y_range=cfg.model.y_range)


# ---------------------------------------------------------------- loading
class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader that refuses a key given twice in one mapping (YAML keeps the last one
    without a word, so the first value a reader sees is not the one that runs)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:  # before merge keys are flattened: `<<` may be overridden
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {first[key] + 1})",
                        key_node.start_mark)
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _load_yaml(text: str, name: str = "<unicode string>"):
    """`yaml.safe_load(text)`, refusing duplicate keys; an error's marks name `name` and the line."""
    loader = _UniqueKeyLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UlmfitError(f"config file not found: {path}")
    try:
        data = _load_yaml(path.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as e:
        raise UlmfitError(f"{path}: not valid YAML:\n{e}") from None
    except UnicodeDecodeError as e:
        raise UlmfitError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UlmfitError(f"{path}: a config must be a mapping of sections (data:, model:, train:, run:), "
                          f"not a {type(data).__name__}")
    meta = data.pop(META_KEY, None)
    if isinstance(meta, dict) and isinstance(meta.get(REQUESTED), dict):
        # a run's config.yaml records the device it ran on; read back, it asks again for what was asked
        for dotted, value in meta[REQUESTED].items():
            section, _, key = dotted.partition(".")
            if isinstance(data.get(section), dict):
                data[section][key] = value
    return data


def _set(into: dict, key, value, origin: dict, path: tuple, source: str) -> None:
    """`into[key] = value` from `source`; the keys below `path` that earlier sources set are gone with
    their section (kept, they would be blamed for an error in the value that replaced it)."""
    for below in [k for k in origin if len(k) > len(path) and k[:len(path)] == path]:
        del origin[below]
    into[key] = value
    origin[path] = source


def _merge(into: dict, new: dict, origin: dict, source: str, prefix: tuple = ()) -> None:
    """Deep-merge `new` into `into`, remembering which source set each leaf."""
    for key, value in new.items():
        path = prefix + (str(key),)
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, origin, source, path)
        else:
            _set(into, key, value, origin, path, source)


def _parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UlmfitError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. --set train.lr=1e-3")
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise UlmfitError(f"--set {item!r}: the value is not valid YAML: {e}") from None
    return tuple(key.split(".")), value


def _source_of(loc: tuple, origin: dict) -> str:
    below = [src for key, src in origin.items() if len(key) > len(loc) and key[:len(loc)] == loc]
    if below:  # an unknown section given whole by one source (--set train.foo.bar=1 makes train.foo)
        return below[-1]
    for n in range(len(loc), -1, -1):
        if loc[:n] in origin:
            return origin[loc[:n]]
    return "code defaults" if loc else "the config"


def _known_keys(cls: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in cls.model_fields.items():
        keys.append(prefix + name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _known_keys(ann, prefix + name + ".")
    return keys


def _format_errors(err: ValidationError, origin: dict, cls: type[BaseModel], what: str) -> str:
    known = _known_keys(cls)
    lines = [f"invalid {what}:"]
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        key = ".".join(loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            close = difflib.get_close_matches(key, known, n=1)
            if close:
                msg += f" (did you mean {close[0]}?)"
        elif e["type"] == "missing":
            msg = "required, but no config sets it"
        # a check across keys (a model validator) names its key first
        elif not loc and e["type"] == "value_error":
            msg = e["msg"].removeprefix("Value error, ")
            named = re.match(r"([a-z_]+\.[a-z_]+): (.*)", msg, re.S)
            if named:
                key, msg, loc = named[1], named[2], tuple(named[1].split("."))
        else:  # a field validator's ValueError reads as the others do
            msg = f"{e['msg'].removeprefix('Value error, ')} (got {e.get('input')!r})"
        where = "" if e["type"] == "missing" else f"  [from {_source_of(loc, origin)}]"
        lines.append(f"  {key}: {msg}{where}")
    return "\n".join(lines)


def load_config(cls: type[StageConfig], paths: list[Path], overrides: list[str], what: str) -> StageConfig:
    """Merge the YAML files and overrides into the validated config `cls` (a stage's: `recipes.Stage.config`);
    `what` names it in errors ("pretrain config")."""
    data: dict = {}
    origin: dict = {}
    for path in paths:
        _merge(data, _read_yaml(Path(path)), origin, str(path))
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for i, k in enumerate(keys[:-1]):
            if not isinstance(node.get(k, {}), dict):  # name where the value came from, not only this --set
                where, dotted = _source_of(keys[:i + 1], origin), ".".join(keys[:i + 1])
                raise UlmfitError(f"{where}: {dotted} is a value ({node[k]!r:.60}), not a section, so "
                                  f"--set {item!r} cannot set a key in it")
            node = node.setdefault(k, {})
        _set(node, keys[-1], value, origin, keys, f"--set {item}")
    for name in cls.model_fields:  # an absent section reports its missing keys, not itself
        data.setdefault(name, {})
    return validate(cls, data, what, origin)


# the keys whose values name files or runs the stage reads: inputs no output of the command may touch
INPUT_KEYS = ("data.source", "data.train", "data.valid", "data.test", "data.extra_text", "data.unlabelled",
              "init.from_run", "init.from_run_backward")


def read_inputs(cfg: StageConfig) -> None:
    """Record the files and runs `cfg` names (`INPUT_KEYS`) as the command's inputs (`files.reads`)."""
    data = cfg.model_dump()
    for key in INPUT_KEYS:
        section, _, name = key.partition(".")
        value = (data.get(section) or {}).get(name)
        for i, path in enumerate(value if isinstance(value, list) else [value]):
            if path and not str(path).startswith(PKG_PREFIX):
                reads(path, f"{key}[{i}]" if isinstance(value, list) else key)


def validate(cls: type[BaseModel], data: dict, what: str, origin: dict | None = None,
             source: str = "code defaults"):
    """`cls` from `data`, or an UlmfitError listing each bad key and where it came from (`origin`: key path
    -> file or --set; `source` for the rest)."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        base = {} if source == "code defaults" else {(): source}
        raise UlmfitError(_format_errors(e, {**base, **(origin or {})}, cls, what)) from None


def derive(cfg: StageConfig, changes: dict[str, Any]) -> StageConfig:
    """`cfg` with the dotted keys of `changes` set (`derive(cfg, {"data.test": None})`) and validated again:
    how code makes a config from another (tune's trials, a pair's members). Not pydantic's
    `model_copy(update=)`, which neither reaches nested keys nor validates."""
    data = cfg.model_dump(mode="json")
    for dotted, value in changes.items():
        *sections, key = dotted.split(".")
        node = data
        for name in sections:
            node = node[name]
        node[key] = value
    return validate(type(cfg), data, "a config derived from " + ", ".join(changes))


def to_yaml(cfg: BaseModel, meta: dict | None = None) -> str:
    data = cfg.model_dump(mode="json")
    if meta:
        data = {META_KEY: meta, **data}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
