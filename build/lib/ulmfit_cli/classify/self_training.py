"""Self-training's choice of pseudo-labels: which unlabelled texts a trained classifier labels confidently
enough to train on (`train.self_training_top`), and which unlabelled texts may be labelled at all (never a
validation or test text, nor one already labelled)."""
from __future__ import annotations

import numpy as np


def unlabelled_pool(texts: list[str], held: list[str]) -> tuple[list[str], int]:
    """`texts` without duplicates and without any text of `held` (the labelled splits: training, validation
    and test), compared after stripping spaces; returns (the pool, how many were left out)."""
    seen = {t.strip() for t in held}
    pool = []
    for t in texts:
        key = t.strip()
        if key and key not in seen:
            seen.add(key)
            pool.append(t)
    return pool, len(texts) - len(pool)


def confident_rows(probs: np.ndarray, y_train: np.ndarray, top: float) -> np.ndarray:
    """The rows of `probs` (the classifier's class probabilities on the unlabelled pool) to keep, ascending:
    per predicted class, the most confident first, at most `top` x the pool x the class's share of the
    training labels `y_train`, so the pseudo-labels keep the training set's class balance instead of
    piling up on the class the model finds easiest."""
    pred, conf = probs.argmax(1), probs.max(1)
    share = np.bincount(y_train, minlength=probs.shape[1]) / len(y_train)
    keep = []
    for c in range(probs.shape[1]):
        rows = np.flatnonzero(pred == c)
        quota = min(len(rows), int(round(top * len(probs) * share[c])))
        keep.append(rows[np.argsort(-conf[rows], kind="stable")[:quota]])
    return np.sort(np.concatenate(keep))
