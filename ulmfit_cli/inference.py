"""Apply trained classifiers: load a train-clf run dir or an exported bundle, predict probabilities.

Loading never unpickles: the weights are a weights-only state dict, vocab/labels/settings JSON
or YAML. Texts go through the tokenizer the model was trained with, are reversed for a backward
model, and run in length-sorted batches padded as in training (fastai's `pad_input_chunk`), so
the probabilities are those `learn.get_preds` gives. Several models (a forward and a backward
one) form an ensemble that averages their probabilities.

    from ulmfit_cli import load_classifier
    clf = load_classifier("runs/trec6-clf")          # or an `ulmfit export` bundle
    clf.predict(["What is the capital of Peru?"])    # -> ['LOC']
    clf.predict_proba([...])                          # -> array (n, len(clf.labels))
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ulmfit_cli.errors import UlmfitError

BUNDLE_FILE = "classifier.json"  # marks an `ulmfit export` bundle
BUNDLE_FORMAT = 1


@dataclass
class Spec:
    """What rebuilds a classifier: architecture, head, input handling."""
    arch: dict
    drop_mult: float
    lin_ftrs: list[int]
    max_len: int
    bptt: int
    backwards: bool
    max_chars: int

    @classmethod
    def from_run_config(cls, config: dict) -> "Spec":
        """From a train-clf run's config.yaml, which holds every resolved value."""
        from ulmfit_cli.runs import ARCH_KEYS
        model, data, train = config["model"], config["data"], config["train"]
        return cls(arch={k: model[k] for k in ARCH_KEYS}, drop_mult=model["drop_mult"], lin_ftrs=model["lin_ftrs"],
                   max_len=model["max_len"], bptt=train["bptt"], backwards=data["backwards"],
                   max_chars=data["max_chars"])


class Classifier:
    """One trained classifier, ready to predict."""

    def __init__(self, path: Path, spec: Spec, vocab: list[str], labels: list[str], weights: dict,
                 sp_model: Path | None, device: torch.device):
        from ulmfit_cli.learners import clf_model
        self.path, self.spec, self.vocab, self.labels, self.sp_model, self.device = \
            path, spec, vocab, labels, sp_model, device
        self.model = clf_model(len(vocab), len(labels), spec.arch, spec.drop_mult, spec.lin_ftrs, spec.max_len,
                               spec.bptt, weights, str(path / "model.pth"))
        self.model.to(device).eval()

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", key: str = "--model") -> "Classifier":
        from ulmfit_cli.config import RunSection
        from ulmfit_cli.corpus.tokenize import sp_model_in
        from ulmfit_cli.learners import pick_device
        from ulmfit_cli.runs import load_weights, read_json, read_run, read_vocab
        path = Path(path)
        if (path / BUNDLE_FILE).is_file():
            meta = read_json(path / BUNDLE_FILE, key)
            if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
                raise UlmfitError(f"{key}: {path / BUNDLE_FILE} is not an ulmfit bundle (format {BUNDLE_FORMAT})")
            try:
                spec = Spec(**meta["spec"])
            except (KeyError, TypeError) as e:
                raise UlmfitError(f"{key}: {path / BUNDLE_FILE} lacks classifier settings ({e})") from None
            for name in ("vocab.json", "labels.json", "model.pth"):
                if not (path / name).is_file():
                    raise UlmfitError(f"{key}: bundle {path} has no {name}")
            vocab = read_vocab(path, key)
        else:
            run = read_run(path, key, ("train-clf",), "model.pth")
            spec, vocab = Spec.from_run_config(run.config), run.vocab
        labels = read_json(path / "labels.json", key)
        if not (isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) for x in labels)):
            raise UlmfitError(f"{key}: {path / 'labels.json'} is not a JSON list of class names")
        dev = pick_device(RunSection(device=device, precision="fp32"))
        return cls(path, spec, vocab, labels, load_weights(path / "model.pth"), sp_model_in(path), dev)

    def token_ids(self, texts: list[str], workers: int | None = 0) -> list[np.ndarray]:
        """Token ids per text, in reading order (truncated as train-clf's data.max_chars)."""
        from ulmfit_cli.corpus.tokenize import numericalize, tokenize
        texts = [t[-self.spec.max_chars:] for t in texts]
        return numericalize(tokenize(texts, workers=workers, sp_model=self.sp_model), self.vocab)

    def predict_proba(self, texts: list[str], workers: int | None = 0, **kwargs) -> np.ndarray:
        """Class probabilities, shape (len(texts), len(self.labels)), rows in the order of `texts`."""
        return self.proba_of_ids(self.token_ids(list(texts), workers), **kwargs)

    @torch.no_grad()
    def proba_of_ids(self, ids: list[np.ndarray], bs: int = 64, precision: str = "fp32",
                     progress: bool = False) -> np.ndarray:
        """`predict_proba` for texts already turned into token ids (by `token_ids`)."""
        from fastai.text.data import pad_input_chunk

        from ulmfit_cli.console import progress as bar
        from ulmfit_cli.corpus.tokenize import PAD
        if self.spec.backwards:  # the backward model reads each text from its end
            ids = [d[::-1].copy() for d in ids]
        order = np.argsort([-len(d) for d in ids], kind="stable")  # longest first, as fastai's SortedDL
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        pad = self.vocab.index(PAD)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        starts = range(0, len(order), bs)
        for a in (bar(starts, desc="predict", unit="batch") if progress else starts):
            rows = order[a:a + bs]
            batch = pad_input_chunk([(torch.from_numpy(ids[i]), 0) for i in rows], pad_idx=pad, pad_first=True,
                                    seq_len=self.spec.bptt)
            x = torch.stack([b[0] for b in batch]).to(self.device)
            self.model.reset()
            with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = self.model(x)[0]
            out[rows] = logits.float().softmax(-1).cpu().numpy()
        return out

    def predict(self, texts: list[str], **kwargs) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts, **kwargs).argmax(1)]


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
        self.members, self.labels = members, first.labels

    def predict_proba(self, texts: list[str], workers: int | None = 0, **kwargs) -> np.ndarray:
        ids = self.members[0].token_ids(list(texts), workers)  # one vocab: the texts are tokenized once
        return np.mean([m.proba_of_ids(ids, **kwargs) for m in self.members], axis=0)

    def predict(self, texts: list[str], **kwargs) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts, **kwargs).argmax(1)]


def load_classifier(*paths: str | Path, device: str = "auto") -> Classifier | Ensemble:
    """A classifier from a train-clf run dir or an `ulmfit export` bundle; several paths: their ensemble."""
    if not paths:
        raise UlmfitError("load_classifier: give at least one run dir or bundle")
    members = [Classifier.load(p, device) for p in paths]
    return members[0] if len(members) == 1 else Ensemble(members)
