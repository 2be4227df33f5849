"""Which tokens drove a prediction: a score per token for a class (or label, or the regression output), with
Captum's attribution methods on the PyTorch model, and the deletion test that checks the scores are faithful.

Methods (Captum's implementations, on the classifier's embedding layer, `InferenceNet.embedding`):
- `ig` (default): `LayerIntegratedGradients` from the all-padding input to the text, 50 steps (Captum's
  default, Gauss-Legendre). A token's score is its share of the output's change along that path: the scores
  of a text add up to its output minus the all-padding input's (up to `delta`, Captum's convergence delta).
- `grad_input`: `LayerGradientXActivation`, the gradient of the output times the embedding, summed over its
  dimensions: one backward pass. Negative scores speak against the class.
- `intrinsic`: fastai v1's "intrinsic attention" (`TextClassificationInterpretation`, dropped in v2): the
  same gradient without the embedding (`multiply_by_inputs=False`), |gradient| summed over the dimensions.
  Unsigned: it says how much a token matters, not for which class.

The scores explain the model's output for the class: its probability (softmax, or the label's sigmoid) or the
number. Tokens come in reading order (a backward model's scores are flipped back). The model reads at most
`data.max_chars` characters (the text's end) and pools over its last `model.max_len` tokens (`window`;
tokens before it count only through the LSTM's state). A classifier that blends in its TF-IDF baseline
outputs w x model + (1 - w) x baseline: the token scores are the model's times w, and `baseline_terms` gives
the baseline's n-grams with their Integrated Gradients (or gradient x input) on the same scale, times
(1 - w). An ensemble's scores are its members' scores, each divided by its largest magnitude, averaged.
Explanations run a second `InferenceNet` on the same weights, so Captum's hooks never touch the network
that predicts (a server predicts while it explains).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients

from ulmfit_cli.console import progress as bar
from ulmfit_cli.corpus.direction import orient_docs
from ulmfit_cli.corpus.text import BOS, PAD, numericalize
from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.inference.classifier import Classifier
from ulmfit_cli.inference.net import InferenceNet
from ulmfit_cli.inference.runtime import Ensemble
from ulmfit_cli.train.batches import by_length, pad_end

METHODS = {"ig": "Integrated Gradients (Captum LayerIntegratedGradients, 50 steps)",
           "grad_input": "gradient x input (Captum LayerGradientXActivation)",
           "intrinsic": "fastai v1's intrinsic attention: |gradient| summed (unsigned)"}
N_STEPS = 50                 # Captum's default
EXPLAIN_TOKENS = 8_192       # token positions per forward+backward pass (IG's steps included)
BASELINE_TERMS = 10          # the baseline's terms kept per target, largest magnitude first


@dataclass
class Explanation:
    """One text's attributions. `scores[i, t]`: token t's contribution to target i's output."""
    tokens: list[str]
    targets: list[str]
    scores: np.ndarray
    prediction: object
    outputs: list[float]      # the text's predict_proba row (blended, as predict gives it)
    method: str
    window: tuple[int, int]   # the tokens [start, end) the model (of an ensemble: its first) pools over
    cut_chars: int = 0        # characters cut from the text's start (data.max_chars)
    model_weight: float = 1.0  # the blend's weight of the model (scores are the model's times it)
    baseline_terms: list[list[tuple[str, float]]] | None = None  # per target, times (1 - weight)
    delta: float | None = None  # ig: the largest |sum of scores - (output - baseline output)|
    notes: list[str] = field(default_factory=list)
    by_magnitude: bool = False  # regression: `top` ranks by |score| (there is no class to speak for)

    def top(self, k: int = 5, target: int = 0) -> list[tuple[str, float]]:
        """The k tokens that speak most for the target (regression: the largest magnitudes), best first;
        never xxbos, which starts every text."""
        s = self.scores[target]
        key = -np.abs(s) if self.by_magnitude else -s
        order = [t for t in np.argsort(key, kind="stable") if self.tokens[t] != BOS]
        return [(self.tokens[t], float(s[t])) for t in order[:k]]

    def as_dict(self) -> dict:
        """JSON-ready: what predict's JSONL and the server's `explanation` carry."""
        return {"method": self.method, "targets": self.targets, "tokens": self.tokens,
                "scores": [[round(float(v), 6) for v in row] for row in self.scores],
                "window": list(self.window), "cut_chars": self.cut_chars, "model_weight": self.model_weight,
                "baseline_terms": self.baseline_terms, "delta": self.delta, "notes": self.notes}


def explain(clf, texts: list[str], target=None, method: str = "ig", n_steps: int = N_STEPS,
            progress: bool = False) -> list[Explanation]:
    """Attributions for each text: `clf` a classifier or ensemble (ONNX bundles: their PyTorch weights),
    `target` a label or output index for every text (default: the predicted class; multi-label: each
    predicted label, else the likeliest; regression: the output)."""
    if method not in METHODS:
        raise UlmfitError(f"--explain-method: expected one of {', '.join(METHODS)}, got {method!r}")
    texts = list(texts)
    members = [_on_torch(m) for m in (clf.members if isinstance(clf, Ensemble) else [clf])]
    tokens = clf.tokens(texts, workers=0)
    ids = numericalize(tokens, members[0].index)
    outputs = clf.outputs_of(texts, ids)
    predicted = clf.task.decide(outputs, clf.labels, clf.thresholds)
    given = _targets(clf, target)
    targets = [given or clf.task.explained(row, pred, clf.labels) for row, pred in zip(outputs, predicted)]
    per_member = [_member(m, texts, ids, targets, method, n_steps, progress and i == 0)
                  for i, m in enumerate(members)]
    out = []
    for r, text in enumerate(texts):
        parts = [pm[r] for pm in per_member]
        if len(parts) == 1:
            scores, baseline_terms, weight, delta = parts[0]
        else:  # each member's scale differs: normalise, then average
            scores = np.mean([s / max(np.abs(s).max(), 1e-12) for s, *_ in parts], axis=0)
            baseline_terms = _merged_terms([p[1] for p in parts])
            weight = float(np.mean([p[2] for p in parts]))
            delta = None
        windows = [_window(m, len(ids[r])) for m in members]
        notes = [f"the {'backward ' if m.spec.backwards else ''}model pools over tokens {a}-{b - 1} "
                 f"(model.max_len); the others count through the LSTM's state"
                 for m, (a, b) in zip(members, windows) if (a, b) != (0, len(ids[r]))]
        cut = max(0, len(text) - clf.spec.max_chars)
        if cut:
            notes.append(f"the first {cut:,} characters were cut (data.max_chars) and are not scored")
        out.append(Explanation(tokens[r], [clf.labels[j] for j in targets[r]], scores, predicted[r],
                               [float(v) for v in outputs[r]], method, windows[0], cut, weight,
                               baseline_terms, delta, notes, by_magnitude=clf.task.by_magnitude))
    return out


def _window(clf: Classifier, n: int) -> tuple[int, int]:
    """The tokens [start, end) of an n-token text, in reading order, that the model pools over."""
    start = clf.net.window_start(n)  # in the model's order
    return (0, n - start) if clf.spec.backwards else (start, n)


def _on_torch(member) -> Classifier:
    """The PyTorch classifier of a member (an ONNX bundle keeps classifier.pth beside model.onnx: loaded
    once, kept as the member's `torch_twin`)."""
    if isinstance(member, Classifier):
        return member
    if member.torch_twin is None:
        member.torch_twin = Classifier.load(member.path, "cpu")
    return member.torch_twin


def _targets(clf, target) -> list[int]:
    """The output index `target` names (a label or an index), as a list; none given: []."""
    if target is None:
        return []
    index = isinstance(target, (int, np.integer)) and not isinstance(target, bool)
    if index and 0 <= target < len(clf.labels):
        return [int(target)]
    if isinstance(target, str) and target in clf.labels:
        return [clf.labels.index(target)]
    raise UlmfitError(f"target: {target!r} is not one of the model's outputs ({', '.join(clf.labels)})")


def _member(clf: Classifier, texts: list[str], ids: list[np.ndarray], targets: list[list[int]], method: str,
            n_steps: int, progress: bool) -> list[tuple]:
    """One PyTorch member's (scores (targets, tokens), baseline terms, blend weight, delta) per text."""
    weight = 1.0 if clf.blend is None else clf.blend[0]
    pairs = [(r, j) for r, js in enumerate(targets) for j in js]
    scores = _attribute(clf, [ids[r] for r, _ in pairs], [j for _, j in pairs], method, n_steps, progress)
    out, k = [], 0
    for r, js in enumerate(targets):
        rows = [scores[k + i] for i in range(len(js))]
        k += len(js)
        terms = None
        if clf.blend is not None:
            alphas = (np.arange(n_steps) + 0.5) / n_steps if method == "ig" else np.ones(1)
            terms = []
            for j in js:
                names, values = clf.blend[1].attributions(texts[r][-clf.spec.max_chars:], j, alphas)
                best = np.argsort(-np.abs(values), kind="stable")[:BASELINE_TERMS]
                terms.append([(names[i], round(float(values[i] * (1 - weight)), 6)) for i in best])
        delta = max((d for _, d in rows if d is not None), default=None)
        out.append((np.stack([s for s, _ in rows]) * weight, terms, weight, delta))
    return out


def _attribute(clf: Classifier, docs: list[np.ndarray], targets: list[int], method: str, n_steps: int,
               progress: bool = False) -> list[tuple[np.ndarray, float | None]]:
    """Captum's attributions of the model's output `targets[i]` to each token of `docs[i]` (reading order),
    and IG's convergence delta."""
    net = InferenceNet(clf.model, clf.index[PAD], clf.task.activation, clf.spec.bptt, clf.spec.max_len)
    pad = clf.index[PAD]
    model_docs = orient_docs(docs, clf.spec.backwards)
    out: list = [None] * len(docs)
    steps = n_steps if method == "ig" else 1
    batches = by_length(np.array([len(d) for d in model_docs]), 64, max(EXPLAIN_TOKENS // steps, 1))
    explainer = (LayerIntegratedGradients(net, net.embedding) if method == "ig"
                 else LayerGradientXActivation(net, net.embedding, multiply_by_inputs=method == "grad_input"))
    # cuDNN's LSTM has no backward in eval mode; dropout stays off either way (InferenceNet has none)
    with torch.backends.cudnn.flags(enabled=False):
        for rows in (bar(batches, desc="explain", unit="batch") if progress else batches):
            x = torch.from_numpy(pad_end([model_docs[i] for i in rows], pad)).to(clf.device)
            real = x != pad
            target = [targets[i] for i in rows]
            if method == "ig":
                attr, delta = explainer.attribute(
                    x, baselines=torch.full_like(x, pad), target=target, additional_forward_args=(real,),
                    n_steps=n_steps, internal_batch_size=max(1, EXPLAIN_TOKENS // x.shape[1]),
                    return_convergence_delta=True)
                delta = delta.abs().detach().cpu().numpy()
            else:
                attr, delta = explainer.attribute(x, target=target, additional_forward_args=(real,)), None
            attr = (attr.abs() if method == "intrinsic" else attr).sum(-1).detach().float().cpu().numpy()
            for k, i in enumerate(rows):
                s = attr[k, :len(model_docs[i])]
                out[i] = (s[::-1].copy() if clf.spec.backwards else s,
                          None if delta is None else float(delta[k]))
    return out


def _merged_terms(parts: list) -> list | None:
    """An ensemble's baseline terms: each term's mean over the members (0 where a member has none)."""
    if all(p is None for p in parts):
        return None
    merged = []
    for per_target in zip(*[p for p in parts if p is not None]):
        total: dict[str, float] = {}
        for terms in per_target:
            for name, v in terms:
                total[name] = total.get(name, 0.0) + v / len(parts)
        merged.append(sorted(((n, round(v, 6)) for n, v in total.items()),
                             key=lambda t: -abs(t[1]))[:BASELINE_TERMS])
    return merged


# ---------------------------------------------------------------- faithfulness: the deletion test
def deletion(clf: Classifier, texts: list[str], ks=(1, 2, 3), draws: int = 5, method: str = "ig",
             seed: int = 0) -> dict:
    """ERASER's comprehensiveness (AOPC-style deletion) on the model alone (no blend): for each text, the
    predicted class's probability minus its probability once the k best-scored tokens are removed, against
    removing k random tokens (`draws` draws each; xxbos is never removed, and texts with at most k other
    tokens are skipped). Returns {k: {"attributed": drops, "random": drops (each text's mean over draws)}}."""
    if not clf.task.by_class:
        raise UlmfitError("the deletion test scores single-label classifiers")
    ids = clf.token_ids(texts, workers=0)
    base = clf.proba_of_ids(ids)
    predicted = base.argmax(1)
    scores = _attribute(clf, ids, predicted.tolist(), method, N_STEPS)
    rng = np.random.default_rng(seed)
    bos = clf.index.get(BOS)
    out = {}
    for k in ks:
        keep = [r for r, d in enumerate(ids) if int((d != bos).sum()) > k]
        attributed, random_sets = [], []
        for r in keep:
            candidates = np.flatnonzero(ids[r] != bos)
            best = candidates[np.argsort(-scores[r][0][candidates], kind="stable")[:k]]
            attributed.append(np.delete(ids[r], best))
            random_sets += [np.delete(ids[r], rng.choice(candidates, k, replace=False)) for _ in range(draws)]
        p = predicted[keep]
        drop = base[keep, p] - clf.proba_of_ids(attributed)[np.arange(len(keep)), p]
        rand = clf.proba_of_ids(random_sets)[np.arange(len(random_sets)), np.repeat(p, draws)]
        out[k] = {"attributed": drop, "random": (np.repeat(base[keep, p], draws) - rand).reshape(-1, draws)
                  .mean(1)}
    return out
