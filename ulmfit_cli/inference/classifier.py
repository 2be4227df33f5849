"""Apply trained classifiers: load a train-clf run dir or an exported bundle, predict probabilities.

Loading never unpickles: the weights are a weights-only state dict, vocab/labels/settings JSON
or YAML. The classifier is rebuilt from the artifact's typed `ClassifierSpec` (taken from a run's
resolved config, or a bundle's classifier.json, both validated). Texts go through the tokenizer the
model was trained with (built once per loaded model), are oriented for a backward model, sorted by length
and batched by tokens in this process (`train.batches`: no DataLoader workers), padded as in training,
and run under `torch.inference_mode`, so the probabilities are those `learn.get_preds` gives, without its
per-call cost. A classifier trained with a blend (`model.blend`: blend.json, baseline.json,
baseline.npz) mixes in its TF-IDF baseline's outputs with its weight, as train-clf scored it. Several
models (a forward and a backward one) form an ensemble that averages their (blended) outputs
(probabilities, or numbers; a multi-label ensemble cuts the mean probabilities at its members' mean
thresholds).

    from ulmfit_cli import load_classifier
    clf = load_classifier("runs/trec6-clf")       # or an `ulmfit export` bundle
    clf.predict(["What is the capital of Peru?"]) # -> ['LOC']; multi-label: [('LOC', ...)]; regression: [4.2]
    clf.predict_proba([...])                      # -> array (n, len(clf.labels)); regression: (n, 1) numbers
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ulmfit_cli.classify.baseline import LinearBaseline
from ulmfit_cli.classify.blend import mix
from ulmfit_cli.classify.pairs import members as pair_members
from ulmfit_cli.classify.task import TASKS
from ulmfit_cli.config import ClassifierConfig, ClassifierSpec, validate
from ulmfit_cli.console import progress as bar
from ulmfit_cli.corpus.direction import orient_docs
from ulmfit_cli.corpus.text import PAD, make_tokenizer, numericalize
from ulmfit_cli.corpus.tokenize import tokenize
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import load_weights, read_json, reads
from ulmfit_cli.layout import (BLEND, BUNDLE, BUNDLE_FORMAT, CLASSIFIER, CLASSIFIER_STAGE, LABELS, THRESHOLDS,
                               VOCAB)
from ulmfit_cli.runs import read_run, read_vocab, sp_model_in
from ulmfit_cli.train.batches import MAX_ROWS, MAX_TOKENS, by_length, pad_chunks
from ulmfit_cli.train.device import decide, torch_device
from ulmfit_cli.train.learners import clf_model


class Classifier:
    """One trained classifier, ready to predict."""

    def __init__(self, path: Path, spec: ClassifierSpec, vocab: list[str], labels: list[str], weights: dict,
                 sp_model: Path | None, device: torch.device, thresholds: np.ndarray | None = None,
                 blend: tuple[float, LinearBaseline] | None = None):
        self.path, self.spec, self.vocab, self.labels, self.sp_model, self.device = \
            path, spec, vocab, labels, sp_model, device
        self.task, self.thresholds = TASKS[spec.task], thresholds
        self.blend = blend  # (weight, baseline): outputs are weight * model + (1 - weight) * baseline
        self.model = clf_model(len(vocab), len(labels), spec.arch.model_dump(), spec.drop_mult, spec.lin_ftrs,
                               spec.max_len, spec.bptt, weights, str(path / CLASSIFIER), spec.y_range)
        self.model.to(device).eval()
        self.tokenizer = make_tokenizer(sp_model, spec.lang)
        self.index = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", key: str = "--model") -> "Classifier":
        path = Path(path)
        reads(path, key)
        if (path / BUNDLE).is_file():
            meta = read_json(path / BUNDLE, key)
            if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
                raise UlmfitError(f"{key}: {path / BUNDLE} is not an ulmfit bundle (format {BUNDLE_FORMAT})")
            spec = meta.get("spec")
            spec = validate(ClassifierSpec, spec if isinstance(spec, dict) else {},
                            f"classifier settings (spec) in {path / BUNDLE}", source=str(path / BUNDLE))
            for name in (VOCAB, LABELS, CLASSIFIER):
                if not (path / name).is_file():
                    raise UlmfitError(f"{key}: bundle {path} has no {name}")
            vocab = read_vocab(path, key)
        else:
            run = read_run(path, key, (CLASSIFIER_STAGE,), CLASSIFIER)
            spec, vocab = ClassifierSpec.of(run.typed(ClassifierConfig)), run.vocab
        task = TASKS[spec.task]
        labels = read_json(path / LABELS, key)
        if not (isinstance(labels, list) and len(labels) >= task.least_labels
                and all(isinstance(x, str) for x in labels)):
            raise UlmfitError(f"{key}: {path / LABELS} is not a JSON list of class names")
        thresholds = _thresholds(path, labels, key) if task.thresholded else None
        dev = torch_device(decide(device, "fp32", key="--")[0])
        return cls(path, spec, vocab, labels, load_weights(path / CLASSIFIER), sp_model_in(path), dev,
                   thresholds, _blend(path, task, len(labels), key))

    def token_ids(self, texts: list[str], workers: int | None = None) -> list[np.ndarray]:
        """Token ids per text, in reading order (truncated as train-clf's data.max_chars); worker processes
        only for inputs large enough to pay for them (`workers`: at most that many, 0: none)."""
        texts = [t[-self.spec.max_chars:] for t in texts]
        return numericalize(tokenize(texts, workers=workers, sp_model=self.sp_model, lang=self.spec.lang,
                                     tokenizer=self.tokenizer), self.index)

    def predict_proba(self, texts: list[str], workers: int | None = None, **kwargs) -> np.ndarray:
        """Shape (len(texts), len(self.labels)), rows in the order of `texts`: class probabilities (softmax),
        label probabilities (a sigmoid each, multi-label), or the predicted numbers (regression); blended with
        the baseline's when the classifier was trained with a blend."""
        texts = list(texts)
        return self.blended(self.proba_of_ids(self.token_ids(texts, workers), **kwargs), texts)

    def blended(self, outputs: np.ndarray, texts: list[str]) -> np.ndarray:
        """The model's `outputs` for `texts` mixed with its baseline's (as is, without a blend)."""
        if self.blend is None:
            return outputs
        weight, baseline = self.blend
        return mix(weight, outputs, baseline.outputs([t[-self.spec.max_chars:] for t in texts]))

    @torch.inference_mode()
    def proba_of_ids(self, ids: list[np.ndarray], bs: int = MAX_ROWS, max_tokens: int = MAX_TOKENS,
                     precision: str = "fp32", progress: bool = False) -> np.ndarray:
        """`predict_proba` for texts already turned into token ids (by `token_ids`): batches of at most `bs`
        texts and `max_tokens` token slots (`train.batches`)."""
        docs = orient_docs(ids, self.spec.backwards)
        out = np.zeros((len(docs), len(self.labels)), dtype=np.float32)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        pad = self.index[PAD]
        batches = by_length(np.array([len(d) for d in docs]), bs, max_tokens)
        for rows in (bar(batches, desc="predict", unit="batch") if progress else batches):
            x = torch.from_numpy(pad_chunks([docs[i] for i in rows], pad, self.spec.bptt)).to(self.device)
            with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = self.model(x)[0]
            out[rows] = self.task.activation(logits.float()).cpu().numpy()
        return out

    def predict(self, texts: list[str], **kwargs) -> list:
        return self.task.decide(self.predict_proba(texts, **kwargs), self.labels, self.thresholds)

    @property
    def text_col(self):
        """The column(s) it was trained on (data.text_col): what predict and evaluate read by default."""
        return self.spec.text_col


class Ensemble:
    """Several classifiers of the same labels and vocab (e.g. forward + backward): mean probabilities."""

    def __init__(self, members: list[Classifier]):
        first = members[0]
        for m in members[1:]:
            if m.labels != first.labels:
                raise UlmfitError(f"--model: {m.path} predicts {m.labels}, but {first.path} predicts "
                                  f"{first.labels}; ensemble members must share their classes")
            if m.vocab != first.vocab:
                raise UlmfitError(f"--model: {m.path} and {first.path} have different vocabularies; ensemble "
                                  f"members must be fine-tuned on the same texts (the forward and backward "
                                  f"runs of one recipe)")
            if m.task != first.task:
                raise UlmfitError(f"--model: {m.path} is a {m.task} model, but {first.path} is {first.task}; "
                                  f"ensemble members must be trained for the same task")
        self.members, self.labels, self.text_col, self.task = (members, first.labels, first.text_col,
                                                               first.task)
        self.spec = first.spec
        self.thresholds = np.mean([m.thresholds for m in members], axis=0) if self.task.thresholded else None

    def predict_proba(self, texts: list[str], workers: int | None = None, **kwargs) -> np.ndarray:
        texts = list(texts)
        ids = self.members[0].token_ids(texts, workers)  # one vocab: the texts are tokenized once
        return np.mean([m.blended(m.proba_of_ids(ids, **kwargs), texts) for m in self.members], axis=0)

    def predict(self, texts: list[str], **kwargs) -> list:
        return self.task.decide(self.predict_proba(texts, **kwargs), self.labels, self.thresholds)


def _blend(path: Path, task, n_labels: int, key: str) -> tuple[float, LinearBaseline] | None:
    """A classifier's blend with its baseline (blend.json's weight, the baseline's files), or None."""
    if not (path / BLEND).is_file():
        return None
    meta = read_json(path / BLEND, key)
    weight = meta.get("weight") if isinstance(meta, dict) else None
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight <= 1:
        raise UlmfitError(f"{key}: {path / BLEND} is not a blend weight in [0, 1] ({{\"weight\": w}})")
    baseline = LinearBaseline.load(path, key)
    if baseline.task != task or baseline.coef.shape[0] != n_labels:
        raise UlmfitError(f"{key}: the baseline in {path} is not for this model's {n_labels} output(s) "
                          f"({task})")
    return float(weight), baseline


def _thresholds(path: Path, labels: list[str], key: str) -> np.ndarray:
    """A multi-label model's decision thresholds, one per label, from its thresholds.json."""
    file = path / THRESHOLDS
    if not file.is_file():
        raise UlmfitError(f"{key}: {path} is a multi-label model without {THRESHOLDS}")
    cuts = read_json(file, key)
    if not (isinstance(cuts, dict) and set(cuts) == set(labels)
            and all(isinstance(v, (int, float)) and 0 < v < 1 for v in cuts.values())):
        raise UlmfitError(f"{key}: {file} is not one threshold in (0, 1) for each of its labels")
    return np.array([float(cuts[lbl]) for lbl in labels])


def load_classifier(*paths: str | Path, device: str = "auto", threads: int | None = None) -> Classifier | Ensemble:
    """A classifier from a train-clf run dir or an `ulmfit export` bundle; several paths, or a
    forward+backward pair (`--directions both`): their ensemble. `threads`: PyTorch's CPU threads (default:
    its own choice; 1 per process where several serve side by side)."""
    if not paths:
        raise UlmfitError("load_classifier: give at least one run dir or bundle")
    if threads is not None:
        torch.set_num_threads(threads)
    members = [Classifier.load(m, device) for p in paths for m in (pair_members(p) or [p])]
    return members[0] if len(members) == 1 else Ensemble(members)
