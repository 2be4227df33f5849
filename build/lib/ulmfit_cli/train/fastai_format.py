"""fastai's language-model files, read and written: a published AWD-LSTM LM found in a folder (`find`), its
weights under fastai v2's names (`lm_state`, `sizes`, `to_model`), and `export_fastai`, which writes one of
ours back as the files fastai's `pretrained_fnames` loads. `ulmfit import-lm` (`recipes/import_lm.py`) makes
a run dir of what is read here.

Sources:
- `wt103-fwd` / `wt103-bwd`: fastai's WikiText-103 models, fetched with fastai's own `untar_data` (and
  its cache, ~/.fastai/models) when the machine is online;
- a folder or archive (.tgz, .tar.gz, .tar, .zip) holding a fastai LM state dict `*.pth` (the plain
  state dict, or the `{'model': ..., 'opt': ...}` that `learn.save` writes) and its vocabulary (`*.pkl`,
  a pickled list of tokens, or a JSON list);
- a fastai_ulmfit archive: `fwd/` and `bwd/` (each `*model.pth`, `*vocab.pkl`, `model.json`) and
  `spm/spm.model`; `backwards` picks the direction.

Nothing is unpickled except through `files.load_token_list` (plain data only); weights load with
`weights_only=True`; archive members outside the archive are refused. fastai v1 key names (the WT103
files) load as fastai's `load_pretrained` loads them: `clean_raw_keys`, then the tensors by position;
here each shape is checked too, which fastai's `load_ignore_keys` does not.
"""
from __future__ import annotations

import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from fastai.data.external import URLs, fastai_path, untar_data
from fastai.text.learner import clean_raw_keys
from fastai.text.models import AWD_LSTM, get_language_model
from fastcore.foundation import L
from sentencepiece import SentencePieceProcessor

from ulmfit_cli.errors import UlmfitError
from ulmfit_cli.files import (atomic_write, load_token_list, read_json, read_token_json, torch_load_safe,
                              write_json)
from ulmfit_cli.layout import LM_WEIGHTS
from ulmfit_cli.train.learners import awd_config

KEY = "SOURCE"
NAMED = {"wt103-fwd": ("WT103_FWD", False), "wt103-bwd": ("WT103_BWD", True)}


@dataclass
class Found:
    """The files of one direction of a published LM."""
    weights: Path
    vocab: Path
    sp_model: Path | None
    backwards: bool
    lang: str | None = None  # a word-tokenized fastai_ulmfit model's spaCy language


def fetch(name: str) -> Path:
    """fastai's WT103 model `name` (a key of NAMED), through fastai's own download cache."""
    url = getattr(URLs, NAMED[name][0])
    try:
        return untar_data(url, c_key="model")
    except Exception as e:  # noqa: BLE001 - urllib, requests and socket errors all mean "could not fetch"
        raise UlmfitError(f"{KEY}: cannot download {name} from {url} ({type(e).__name__}: {e}). Offline, "
                          f"fetch that file on a machine that is online and run `ulmfit import-lm "
                          f"{Path(url).name}` with it, or unpack it into "
                          f"{fastai_path('model') / name}") from None


class _Source:
    """What messages name: the SOURCE the user gave (an archive, not the folder it was unpacked in) and
    each file by its path inside it."""

    def __init__(self, root: Path, source: Path | str | None):
        self.root, self.name = root, str(source if source is not None else root)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _only(folder: Path, patterns: tuple[str, ...], what: str, src: _Source,
          required: bool = True) -> Path | None:
    hits = sorted({p for pat in patterns for p in folder.glob(pat) if p.is_file()})
    if len(hits) > 1:
        raise UlmfitError(f"{KEY}: {src.name} holds several {what} ({', '.join(src.rel(p) for p in hits)}); "
                          f"keep one in the folder (an archive: unpack it and give that folder)")
    if not hits and required:
        # deeper down, e.g. two models side by side (a/lm.pth, b/lm.pth): name them, pick none
        deeper = sorted({p for pat in patterns for p in folder.rglob(pat) if p.is_file()})
        if deeper:
            raise UlmfitError(f"{KEY}: {src.name} holds {len(deeper)} candidate(s) for the {what}, in "
                              f"subfolders ({', '.join(src.rel(p) for p in deeper)}); give the folder of one "
                              f"model (an archive: unpack it first)")
        raise UlmfitError(f"{KEY}: {src.name} holds no {what} ({' or '.join(patterns)})")
    return hits[0] if hits else None


def _sp_checked(path: Path | None, src: _Source) -> Path | None:
    """`path` if SentencePiece loads it: a damaged one is refused here, not when finetune-lm tokenizes."""
    if path is not None:
        try:
            SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as e:
            # SentencePiece's reason names the file by the path it read, a temporary one for an archive
            why = (str(e).strip().splitlines() or [type(e).__name__])[0].replace(str(path), src.rel(path))
            raise UlmfitError(f"{KEY}: {src.name}: {src.rel(path)} is not a SentencePiece model ({why}); "
                              f"fetch the model again, or give the tokenizer it was trained with") from None
    return path


def find(folder: Path, backwards: bool | None, source: Path | str | None = None) -> Found:
    """The weights, vocabulary and tokenizer of a published LM in `folder` (one level of nesting allowed,
    as archives often wrap their files in a folder); messages name `source` (the archive `folder` was
    unpacked from; default: `folder`)."""
    src = _Source(folder, source)
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and not (folder / "fwd").is_dir():
        folder = entries[0]
    if (folder / "fwd").is_dir() or (folder / "bwd").is_dir():  # fastai_ulmfit
        direction = "bwd" if backwards else "fwd"
        sub = folder / direction
        if not sub.is_dir():
            raise UlmfitError(f"{KEY}: {src.name} has no {src.rel(sub)}/ model; "
                              + ("leave out --backwards" if backwards else "pass --backwards"))
        meta = read_json(sub / "model.json", KEY) if (sub / "model.json").is_file() else {}
        tok = (meta.get("tokenizer") or {}) if isinstance(meta, dict) else {}
        sp = folder / "spm" / "spm.model"
        if tok.get("class") == "SentencePieceTokenizer" and not sp.is_file():
            raise UlmfitError(f"{KEY}: {src.name}: {src.rel(sub / 'model.json')} names a SentencePiece "
                              f"tokenizer, but {src.rel(sp)} is missing")
        lang = (tok.get("params") or {}).get("lang") if tok.get("class") == "SpacyTokenizer" else None
        return Found(_only(sub, ("*model.pth", "*.pth"), "weights file", src),
                     _only(sub, ("*vocab.pkl", "*.pkl"), "vocabulary", src),
                     _sp_checked(sp if sp.is_file() else None, src), bool(backwards), lang)
    weights = _only(folder, ("*.pth",), "weights file", src)
    vocab = _only(folder, ("*.pkl", "*vocab.json", "itos*.json"), "vocabulary", src)
    sp = _only(folder, ("*.model",), "SentencePiece model", src, required=False)
    return Found(weights, vocab, _sp_checked(sp, src), bool(backwards))


def read_vocab_file(path: Path) -> list[str]:
    return read_token_json(path, KEY) if path.suffix == ".json" else load_token_list(path, KEY)


def lm_state(path: Path) -> dict:
    """The LM's tensors under fastai v2's names, in fastai's order (v1 names cleaned as fastai does)."""
    # L admitted: a list, in which fastai's optimizer state (learn.save with_opt) holds its hypers
    state = torch_load_safe(path, f"{KEY}: {path}: not a weights-only state dict, refused to load it", (L,))
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # learn.save(..., with_opt=True)
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise UlmfitError(f"{KEY}: {path} is not a state dict of tensors")
    return clean_raw_keys(dict(state))


def sizes(state: dict, path: Path) -> dict:
    """emb_sz, n_hid and n_layers read from the weight shapes of an AWD-LSTM language model."""
    emb = state.get("0.encoder.weight")
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"0\.rnns\.(\d+)\.", k))})
    if emb is None or not layers or "1.decoder.weight" not in state:
        raise UlmfitError(f"{KEY}: {path} is not an AWD-LSTM language model (no 0.encoder.weight, 0.rnns.N "
                          f"or 1.decoder.weight); its first keys: {', '.join(list(state)[:5])}")
    hh = [v for k, v in state.items() if k.startswith("0.rnns.0.") and "weight_hh" in k]
    n_hid = int(hh[0].shape[1]) if hh and len(layers) > 1 else int(emb.shape[1])
    return {"emb_sz": int(emb.shape[1]), "n_hid": n_hid, "n_layers": len(layers)}


def to_model(state: dict, vocab: list[str], arch: dict, path: Path):
    """fastai's AWD-LSTM LM with `state` loaded by position (as `load_ignore_keys`), each shape checked."""
    if len(vocab) != state["0.encoder.weight"].shape[0]:
        raise UlmfitError(f"{KEY}: the vocabulary has {len(vocab):,} tokens but {path} has "
                          f"{state['0.encoder.weight'].shape[0]:,} embedding rows: not the "
                          f"model's vocabulary")
    model = get_language_model(AWD_LSTM, len(vocab), config=awd_config(arch))
    ours = model.state_dict()
    if len(ours) != len(state):
        raise UlmfitError(f"{KEY}: {path} has {len(state)} tensors, fastai's AWD-LSTM of these sizes has "
                          f"{len(ours)}: not an AWD-LSTM language model fastai can load")
    mapped = {}
    for (name, mine), (theirs, tensor) in zip(ours.items(), state.items()):
        if mine.shape != tensor.shape:
            raise UlmfitError(f"{KEY}: {path}: {theirs} has shape {tuple(tensor.shape)}, fastai's {name} "
                              f"needs {tuple(mine.shape)}")
        mapped[name] = tensor
    model.load_state_dict(mapped)
    return model


def export_fastai(up, out: Path) -> None:
    """Write an LM run as fastai's `language_model_learner(..., pretrained_fnames=['lm', 'lm_vocab'])` reads
    it from `out`: `lm.pth` (the state dict, as `learn.save(with_opt=False)` writes it), `lm_vocab.pkl` (the
    token list, pickled) and, for a subword model, `spm.model`; `model.json` holds the sizes to pass as
    `config=` (fastai's defaults are the paper's, which a smaller model does not have)."""
    weights = up.weights(LM_WEIGHTS)
    atomic_write(out / "lm.pth", lambda f: torch.save(weights, f))  # fastai's names, not ours
    data = pickle.dumps(list(up.vocab), protocol=4)
    atomic_write(out / "lm_vocab.pkl", lambda f: f.write(data))
    if up.sp_model is not None:
        shutil.copyfile(up.sp_model, out / "spm.model")
    write_json(out / "model.json", {"arch": "AWD_LSTM", "config": up.arch(), "backwards": up.backwards,
                                    "tokenizer": "sentencepiece" if up.sp_model else "spacy",
                                    "pretrained_fnames": ["lm", "lm_vocab"]})
