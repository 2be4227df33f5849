"""What a deployment runs without torch or fastai: the classifiers' common front (`TextClassifier`: texts to
token ids with the tokenizer built once per model, the blend with the baseline, the decision), ensembles,
the files of a bundle every loader checks, and `OnnxClassifier`, an exported bundle's `model.onnx` run by
onnxruntime on NumPy batches (`train.batches`: sorted by length, sized by tokens, padded at the end).

    from ulmfit_cli import load_classifier
    clf = load_classifier("bundle")   # a bundle with model.onnx: this module alone, no torch imported
    clf.predict(["What is the capital of Peru?"])

The PyTorch classifier (`inference.classifier.Classifier`) is a `TextClassifier` too; `chooses_onnx` says
which one a set of paths loads, and `inference.classifier.load_classifier` and the package's
`load_classifier` both ask it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ulmfit_cli.classify.blend import mix
from ulmfit_cli.classify.linear import LinearBaseline
from ulmfit_cli.classify.outputs import OUTPUTS, Outputs
from ulmfit_cli.classify.pairs import members as pair_members
from ulmfit_cli.console import progress as bar
from ulmfit_cli.corpus.direction import orient_docs
from ulmfit_cli.corpus.text import PAD, make_tokenizer, numericalize, tokenize
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import read_json, read_token_json, reads
from ulmfit_cli.layout import (BLEND, BUNDLE, BUNDLE_FORMAT, LABELS, ONNX_MODEL, THRESHOLDS, VOCAB,
                               sp_model_in)
from ulmfit_cli.train.batches import MAX_ROWS, MAX_TOKENS, by_length, pad_end

RUNTIMES = ("auto", "onnx", "torch")


class TextClassifier:
    """A trained classifier's texts-to-outputs front; subclasses give `proba_of_ids` (PyTorch or ONNX).
    `spec` holds at least max_chars, lang, backwards, text_col and label_delim (a `ClassifierSpec`, or a
    bundle's `RuntimeSpec`)."""
    runtime, precision = "torch", "fp32"  # what /v1/info reports; OnnxClassifier's own
    torch_twin = None  # an ONNX bundle's PyTorch classifier, which `inference.explain` loads on first use

    def __init__(self, path: Path, spec, vocab: list[str], labels: list[str], sp_model: Path | None,
                 task: Outputs, thresholds: np.ndarray | None = None,
                 blend: tuple[float, LinearBaseline] | None = None):
        self.path, self.spec, self.vocab, self.labels, self.sp_model = path, spec, vocab, labels, sp_model
        self.task, self.thresholds = task, thresholds
        self.blend = blend  # (weight, baseline): outputs are weight * model + (1 - weight) * baseline
        self.index = {w: i for i, w in enumerate(vocab)}

    @cached_property
    def tokenizer(self):
        """Built on first use, once: an ensemble tokenizes with its first member's only."""
        return make_tokenizer(self.sp_model, self.spec.lang)

    def tokens(self, texts: list[str], workers: int | None = None) -> list[list[str]]:
        """Tokens per text, in reading order (truncated as train-clf's data.max_chars); worker processes
        only for inputs large enough to pay for them (`workers`: at most that many, 0: none)."""
        texts = [t[-self.spec.max_chars:] for t in texts]
        return tokenize(texts, workers=workers, sp_model=self.sp_model, lang=self.spec.lang,
                        tokenizer=self.tokenizer)

    def token_ids(self, texts: list[str], workers: int | None = None) -> list[np.ndarray]:
        """`tokens`' ids in the model's vocab."""
        return numericalize(self.tokens(texts, workers), self.index)

    def proba_of_ids(self, ids: list[np.ndarray], bs: int = MAX_ROWS, max_tokens: int = MAX_TOKENS,
                     precision: str = "fp32", progress: bool = False) -> np.ndarray:
        """`predict_proba` for texts already turned into token ids (by `token_ids`), without the blend."""
        raise NotImplementedError

    def predict_proba(self, texts: list[str], workers: int | None = None, **kwargs) -> np.ndarray:
        """Shape (len(texts), len(self.labels)), rows in the order of `texts`: class probabilities (softmax),
        label probabilities (a sigmoid each, multi-label), or the predicted numbers (regression); blended with
        the baseline's when the classifier was trained with a blend. `kwargs`: `proba_of_ids`'."""
        texts = list(texts)
        return self.outputs_of(texts, self.token_ids(texts, workers), **kwargs)

    def outputs_of(self, texts: list[str], ids: list[np.ndarray], **kwargs) -> np.ndarray:
        """`predict_proba` of `texts` already tokenized (`ids`: their `token_ids`)."""
        return self.blended(self.proba_of_ids(ids, **kwargs), texts)

    def blended(self, outputs: np.ndarray, texts: list[str]) -> np.ndarray:
        """The model's `outputs` for `texts` mixed with its baseline's (as is, without a blend)."""
        if self.blend is None:
            return outputs
        weight, baseline = self.blend
        return mix(weight, outputs, baseline.outputs([t[-self.spec.max_chars:] for t in texts]))

    def predict(self, texts: list[str], **kwargs) -> list:
        return self.task.decide(self.predict_proba(texts, **kwargs), self.labels, self.thresholds)

    @property
    def text_col(self):
        """The column(s) it was trained on (data.text_col): what predict and evaluate read by default."""
        return self.spec.text_col


class Ensemble:
    """Several classifiers of the same labels and vocab (e.g. forward + backward): mean probabilities."""

    def __init__(self, members: list[TextClassifier]):
        first = members[0]
        for m in members[1:]:
            if m.labels != first.labels:
                raise UlmfitError(f"--model: {m.path} predicts {m.labels}, but {first.path} predicts "
                                  f"{first.labels}; ensemble members must share their classes")
            if m.vocab != first.vocab:
                raise UlmfitError(f"--model: {m.path} and {first.path} have different vocabularies; ensemble "
                                  f"members must be fine-tuned on the same texts (the forward and backward "
                                  f"runs of one recipe)")
            if m.task.name != first.task.name:
                raise UlmfitError(f"--model: {m.path} is a {m.task.name} model, but {first.path} is "
                                  f"{first.task.name}; ensemble members must be trained for the same task")
        self.members, self.labels, self.text_col, self.task = (members, first.labels, first.text_col,
                                                               first.task)
        self.spec = first.spec
        self.thresholds = np.mean([m.thresholds for m in members], axis=0) if self.task.thresholded else None

    def tokens(self, texts: list[str], workers: int | None = None) -> list[list[str]]:
        return self.members[0].tokens(texts, workers)  # one vocab: the texts are tokenized once

    def token_ids(self, texts: list[str], workers: int | None = None) -> list[np.ndarray]:
        return self.members[0].token_ids(texts, workers)

    def predict_proba(self, texts: list[str], workers: int | None = None, **kwargs) -> np.ndarray:
        texts = list(texts)
        return self.outputs_of(texts, self.token_ids(texts, workers), **kwargs)

    def outputs_of(self, texts: list[str], ids: list[np.ndarray], **kwargs) -> np.ndarray:
        return np.mean([m.outputs_of(texts, ids, **kwargs) for m in self.members], axis=0)

    def predict(self, texts: list[str], **kwargs) -> list:
        return self.task.decide(self.predict_proba(texts, **kwargs), self.labels, self.thresholds)


# ---------------------------------------------------------------- the files every loader checks
def read_labels(path: Path, task: Outputs, key: str) -> list[str]:
    labels = read_json(path / LABELS, key)
    if not (isinstance(labels, list) and len(labels) >= task.least_labels
            and all(isinstance(x, str) for x in labels)):
        raise UlmfitError(f"{key}: {path / LABELS} is not a JSON list of class names")
    return labels


def read_thresholds(path: Path, labels: list[str], key: str) -> np.ndarray:
    """A multi-label model's decision thresholds, one per label, from its thresholds.json."""
    file = path / THRESHOLDS
    if not file.is_file():
        raise UlmfitError(f"{key}: {path} is a multi-label model without {THRESHOLDS}")
    cuts = read_json(file, key)
    if not (isinstance(cuts, dict) and set(cuts) == set(labels)
            and all(isinstance(v, (int, float)) and 0 < v < 1 for v in cuts.values())):
        raise UlmfitError(f"{key}: {file} is not one threshold in (0, 1) for each of its labels")
    return np.array([float(cuts[lbl]) for lbl in labels])


def read_blend(path: Path, task: Outputs, n_labels: int, key: str) -> tuple[float, LinearBaseline] | None:
    """A classifier's blend with its baseline (blend.json's weight, the baseline's files), or None."""
    if not (path / BLEND).is_file():
        return None
    meta = read_json(path / BLEND, key)
    weight = meta.get("weight") if isinstance(meta, dict) else None
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight <= 1:
        raise UlmfitError(f"{key}: {path / BLEND} is not a blend weight in [0, 1] ({{\"weight\": w}})")
    baseline = LinearBaseline.load(path, key)
    if baseline.task.name != task.name or baseline.coef.shape[0] != n_labels:
        raise UlmfitError(f"{key}: the baseline in {path} is not for this model's {n_labels} output(s) "
                          f"({task.name})")
    return float(weight), baseline


def read_bundle_meta(path: Path, key: str) -> dict:
    """An export bundle's classifier.json, checked for its format."""
    meta = read_json(path / BUNDLE, key)
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise UlmfitError(f"{key}: {path / BUNDLE} is not an ulmfit bundle (format {BUNDLE_FORMAT})")
    return meta


# ---------------------------------------------------------------- the ONNX runtime
@dataclass(frozen=True)
class RuntimeSpec:
    """What the runtime reads of a bundle's `spec` (the rest is inside model.onnx), each value checked: not
    `config.ClassifierSpec`, whose module imports the task's torch side."""
    task: Outputs
    max_chars: int
    lang: str
    backwards: bool
    text_col: str | int | list
    label_col: str | list
    label_delim: str | None

    @classmethod
    def of(cls, spec, source: Path) -> "RuntimeSpec":
        if not isinstance(spec, dict):
            raise UlmfitError(f"{source}: has no classifier settings (spec)")
        checks = {"task": lambda v: v in OUTPUTS, "max_chars": lambda v: isinstance(v, int) and v > 0,
                  "lang": lambda v: isinstance(v, str), "backwards": lambda v: isinstance(v, bool),
                  "text_col": lambda v: isinstance(v, (str, int, list)),
                  "label_col": lambda v: isinstance(v, (str, list)),
                  "label_delim": lambda v: v is None or isinstance(v, str)}
        for name, ok in checks.items():
            if name not in spec or not ok(spec[name]):
                raise UlmfitError(f"{source}: spec.{name} is missing or not valid ({spec.get(name)!r})")
        return cls(OUTPUTS[spec["task"]], *(spec[k] for k in list(checks)[1:]))


class OnnxClassifier(TextClassifier):
    """An exported bundle's model.onnx (fp32 or int8) on onnxruntime's CPU provider."""
    runtime = "onnx"

    def __init__(self, path: Path, spec: RuntimeSpec, vocab, labels, sp_model, thresholds, blend, session,
                 precision: str):
        super().__init__(path, spec, vocab, labels, sp_model, spec.task, thresholds, blend)
        self.session, self.precision = session, precision

    @classmethod
    def load(cls, path: str | Path, key: str = "--model", threads: int | None = None,
             graph: Path | None = None) -> "OnnxClassifier":
        """The bundle at `path`; `graph`: another graph for it than its model.onnx (export's int8 check)."""
        import onnxruntime as ort
        path = Path(path)
        meta = read_bundle_meta(path, key)
        spec = RuntimeSpec.of(meta.get("spec"), path / BUNDLE)
        onnx = meta.get("onnx")
        if not (isinstance(onnx, dict) and onnx.get("precision") in ("fp32", "int8")):
            raise UlmfitError(f"{key}: {path / BUNDLE} does not describe its {ONNX_MODEL} (onnx.precision)")
        for name in (VOCAB, LABELS, ONNX_MODEL):
            if not (path / name).is_file():
                raise UlmfitError(f"{key}: bundle {path} has no {name}")
        labels = read_labels(path, spec.task, key)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime's choice (the machine's cores)
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(graph or path / ONNX_MODEL), options,
                                           providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... for a damaged file
            why = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise UlmfitError(f"{key}: {path / ONNX_MODEL} is not a loadable ONNX model ({why}); export the "
                              f"model again") from None
        return cls(path, spec, read_token_json(path / VOCAB, key), labels, sp_model_in(path),
                   read_thresholds(path, labels, key) if spec.task.thresholded else None,
                   read_blend(path, spec.task, len(labels), key), session, onnx["precision"])

    def proba_of_ids(self, ids: list[np.ndarray], bs: int = MAX_ROWS, max_tokens: int = MAX_TOKENS,
                     precision: str = "fp32", progress: bool = False) -> np.ndarray:
        if precision != "fp32":
            raise UlmfitError(f"--precision {precision}: {self.path} runs on onnxruntime at the precision it "
                              f"was exported in ({self.precision}); for {precision} autocast on a GPU, add "
                              f"--runtime torch --device cuda")
        docs = orient_docs(ids, self.spec.backwards)
        out = np.zeros((len(docs), len(self.labels)), dtype=np.float32)
        pad = self.index[PAD]
        batches = by_length(np.array([len(d) for d in docs]), bs, max_tokens)
        for rows in (bar(batches, desc="predict", unit="batch") if progress else batches):
            out[rows] = self.session.run(None, {"ids": pad_end([docs[i] for i in rows], pad)})[0]
        return out


def onnx_bundle(path: Path) -> bool:
    """Whether `path` is an export bundle with model.onnx (a pair: both members are)."""
    return all((m / ONNX_MODEL).is_file() for m in pair_members(path) or [Path(path)])


def chooses_onnx(paths, runtime: str = "auto", device: str = "auto") -> bool:
    """Whether `paths` load on onnxruntime: every one is an ONNX bundle and neither the runtime nor a GPU
    device asks for PyTorch (`runtime: onnx` on anything else is refused)."""
    if runtime not in RUNTIMES:
        raise UlmfitError(f"--runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    onnx = bool(paths) and all(onnx_bundle(p) for p in paths)
    if runtime == "onnx" and not onnx:
        bad = next(p for p in paths if not onnx_bundle(p)) if paths else "(none given)"
        raise UlmfitError(f"--runtime onnx: {bad} has no {ONNX_MODEL}; export it with `ulmfit export "
                          f"--format onnx`, or leave --runtime auto")
    return onnx and runtime != "torch" and device in ("auto", "cpu")


def load_onnx(*paths: str | Path, threads: int | None = None) -> OnnxClassifier | Ensemble:
    """ONNX bundles (a pair bundle: its members) as one classifier, or their ensemble."""
    members = []
    for p in paths:
        reads(p, "--model")
        members += [OnnxClassifier.load(m, threads=threads) for m in pair_members(p) or [Path(p)]]
    return members[0] if len(members) == 1 else Ensemble(members)
