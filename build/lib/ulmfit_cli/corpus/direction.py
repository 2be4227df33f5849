"""The one owner of a model's direction (`data.backwards`): how token ids are oriented for a backward model.

ULMFiT's backward model reads text from its end. A backward language model trains on the whole token
stream read backwards (each document reversed, and their order); a backward classifier reads each
document from its last token; generating with a backward LM extends the prompt to the left. Training
(loaders, classifier data), inference and generation all orient their ids here.
"""
from __future__ import annotations

import numpy as np


def orient_stream(tokens: np.ndarray, offsets: np.ndarray | None, backwards: bool):
    """An LM's token stream and its document boundaries, read backwards for a backward model."""
    if not backwards:
        return tokens, offsets
    tokens = np.ascontiguousarray(tokens[::-1])
    return tokens, None if offsets is None else int(offsets[-1]) - np.asarray(offsets)[::-1]


def orient_docs(docs: list[np.ndarray], backwards: bool) -> list[np.ndarray]:
    """A classifier's documents: a backward model reads each one from its end."""
    return [d[::-1].copy() for d in docs] if backwards else docs


def orient_prompt(ids, backwards: bool):
    """A prompt's ids (starting with xxbos) as a backward LM continues them: reversed, without the xxbos
    (which would mark the start of the text it writes before the prompt)."""
    return ids[1:].flip(0) if backwards and len(ids) > 1 else ids


def orient_sample(ids: list[int], backwards: bool) -> list[int]:
    """Generated ids in reading order (a backward LM wrote them right to left)."""
    return ids[::-1] if backwards else ids
