"""Apply trained classifiers with PyTorch: load a train-clf run dir or an exported bundle, predict
probabilities.

Loading never unpickles: the weights are a weights-only state dict, vocab/labels/settings JSON or YAML. The
classifier is rebuilt from the artifact's typed `ClassifierSpec` (taken from a run's resolved config, or a
bundle's classifier.json, both validated). Texts go through `runtime.TextClassifier`'s front (the tokenizer
the model was trained with, built once per loaded model; the blend with the TF-IDF baseline, `model.blend`),
are oriented for a backward model, sorted by length and batched by tokens in this process (`train.batches`:
no DataLoader workers), and run by `inference.net.InferenceNet` (the fastai model's computation in one call,
on its weights) under `torch.inference_mode`, so the probabilities are those `learn.get_preds` gives,
without its per-call cost. Several models (a forward and a backward one) form
an ensemble that averages their (blended) outputs (probabilities, or numbers; a multi-label ensemble cuts the
mean probabilities at its members' mean thresholds). The package's `load_classifier` loads a bundle exported
with `--format onnx` on onnxruntime instead (`runtime.chooses_onnx`), unless PyTorch is asked for.

    from ulmfit_cli import load_classifier
    clf = load_classifier("runs/trec6-clf")       # or an `ulmfit export` bundle
    clf.predict(["What is the capital of Peru?"]) # -> ['LOC']; multi-label: [('LOC', ...)]; regression: [4.2]
    clf.predict_proba([...])                      # -> array (n, len(clf.labels)); regression: (n, 1) numbers
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ulmfit_cli.classify.linear import LinearBaseline
from ulmfit_cli.classify.pairs import members as pair_members
from ulmfit_cli.classify.task import TASKS
from ulmfit_cli.config import ClassifierConfig, ClassifierSpec, validate
from ulmfit_cli.console import progress as bar
from ulmfit_cli.corpus.direction import orient_docs
from ulmfit_cli.corpus.text import PAD
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import load_weights, reads
from ulmfit_cli.inference.net import InferenceNet
from ulmfit_cli.inference.runtime import (Ensemble, TextClassifier, read_blend, read_bundle_meta, read_labels,
                                          read_thresholds)
from ulmfit_cli.layout import BUNDLE, CLASSIFIER, CLASSIFIER_STAGE, LABELS, VOCAB, sp_model_in
from ulmfit_cli.runs import read_run, read_vocab
from ulmfit_cli.train.batches import MAX_ROWS, MAX_TOKENS, by_length, pad_end
from ulmfit_cli.train.device import decide, torch_device
from ulmfit_cli.train.learners import clf_model


class Classifier(TextClassifier):
    """One trained classifier on PyTorch, ready to predict."""

    def __init__(self, path: Path, spec: ClassifierSpec, vocab: list[str], labels: list[str], weights: dict,
                 sp_model: Path | None, device: torch.device, thresholds: np.ndarray | None = None,
                 blend: tuple[float, LinearBaseline] | None = None, run_threads: int | None = None):
        super().__init__(path, spec, vocab, labels, sp_model, TASKS[spec.task], thresholds, blend)
        self.device = device
        self.run_threads = run_threads  # the training run's run.threads, the default at inference
        self.model = clf_model(len(vocab), len(labels), spec.arch.model_dump(), spec.drop_mult, spec.lin_ftrs,
                               spec.max_len, spec.bptt, weights, str(path / CLASSIFIER), spec.y_range)
        self.model.to(device).eval()
        self.net = InferenceNet(self.model, self.index[PAD], self.task.activation, spec.bptt, spec.max_len)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", key: str = "--model") -> "Classifier":
        path = Path(path)
        reads(path, key)
        if (path / BUNDLE).is_file():
            spec = read_bundle_meta(path, key).get("spec")
            spec = validate(ClassifierSpec, spec if isinstance(spec, dict) else {},
                            f"classifier settings (spec) in {path / BUNDLE}", source=str(path / BUNDLE))
            for name in (VOCAB, LABELS, CLASSIFIER):
                if not (path / name).is_file():
                    raise UlmfitError(f"{key}: bundle {path} has no {name}")
            vocab, threads = read_vocab(path, key), None
        else:
            run = read_run(path, key, (CLASSIFIER_STAGE,), CLASSIFIER)
            cfg = run.typed(ClassifierConfig)
            spec, vocab, threads = ClassifierSpec.of(cfg), run.vocab, cfg.run.threads
        task = TASKS[spec.task]
        labels = read_labels(path, task, key)
        thresholds = read_thresholds(path, labels, key) if task.thresholded else None
        dev = torch_device(decide(device, "fp32", key="--")[0])
        return cls(path, spec, vocab, labels, load_weights(path / CLASSIFIER), sp_model_in(path), dev,
                   thresholds, read_blend(path, task, len(labels), key), threads)

    @torch.inference_mode()
    def proba_of_ids(self, ids: list[np.ndarray], bs: int = MAX_ROWS, max_tokens: int = MAX_TOKENS,
                     precision: str = "fp32", progress: bool = False) -> np.ndarray:
        """`predict_proba` for texts already turned into token ids (by `token_ids`): batches of at most `bs`
        texts and `max_tokens` token slots (`train.batches`), run by `InferenceNet`."""
        docs = orient_docs(ids, self.spec.backwards)
        out = np.zeros((len(docs), len(self.labels)), dtype=np.float32)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        pad = self.index[PAD]
        batches = by_length(np.array([len(d) for d in docs]), bs, max_tokens)
        for rows in (bar(batches, desc="predict", unit="batch") if progress else batches):
            x = torch.from_numpy(pad_end([docs[i] for i in rows], pad)).to(self.device)
            with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                out[rows] = self.net(x).float().cpu().numpy()
        return out


def load_classifier(*paths: str | Path, device: str = "auto",
                    threads: int | None = None) -> Classifier | Ensemble:
    """A classifier on PyTorch from a train-clf run dir or an `ulmfit export` bundle; several paths, or a
    forward+backward pair (`--directions both`): their ensemble. `threads`: CPU threads (default: the run's
    run.threads, else the library's own choice; 1 per process where several serve side by side). The
    package's `ulmfit_cli.load_classifier` picks onnxruntime instead for ONNX bundles."""
    if not paths:
        raise UlmfitError("load_classifier: give at least one run dir or bundle")
    members = [Classifier.load(m, device) for p in paths for m in (pair_members(p) or [p])]
    threads = threads or members[0].run_threads
    if threads is not None:
        torch.set_num_threads(threads)
    return members[0] if len(members) == 1 else Ensemble(members)
