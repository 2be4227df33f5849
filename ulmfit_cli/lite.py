"""The commands that run without torch or fastai:

- `ulmfit predict` on bundles exported with `--format onnx` (what a deployment installs: docs/deploying.md).
  The CLI comes here when every `--model` is such a bundle and nothing asks for PyTorch (`chooses_onnx`);
  `api.predict` is the same command for every classifier.
- `ulmfit prepare`: building a token store needs spaCy (or SentencePiece) and the corpus readers, not the
  training stack, whose imports took 5 of its first seconds; `api.prepare` is the same command for Python.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from ulmfit_cli.config import PretrainConfig, load_config, read_inputs
from ulmfit_cli.corpus.prepare import prepare as build_store
from ulmfit_cli.corpus.store import TokenStore
from ulmfit_cli.corpus.tables import check_table_output
from ulmfit_cli.files import check_output, command_inputs, reads
from ulmfit_cli.inference.predict import predict_table
from ulmfit_cli.inference.runtime import chooses_onnx, load_onnx
from ulmfit_cli.train.batches import MAX_ROWS, MAX_TOKENS

__all__ = ["chooses_onnx", "predict", "prepare"]  # chooses_onnx: whether the CLI comes here


def predict(models: Sequence[Path | str], input: str | Path, output: Path, text_col=None,
            input_format: str | None = None, bs: int = MAX_ROWS, encoding: str = "utf-8",
            threads: int | None = None, max_tokens: int = MAX_TOKENS, explain: str | None = None,
            top_k: int = 5):
    """`api.predict` for ONNX bundles, on onnxruntime (`explain` needs PyTorch and Captum too)."""
    with command_inputs():  # as api's commands: nothing read is written over
        reads(input, "the --input file")
        for m in models:
            reads(m, "--model")
        check_output(output, folder=False)
        check_table_output(output)
        clf = load_onnx(*models, threads=threads)
        return predict_table(clf, input, output, text_col, input_format, encoding, explain, top_k, bs=bs,
                             max_tokens=max_tokens)


def prepare(configs: Sequence[Path | str] = (), overrides: Sequence[str] = (),
            force: bool = False) -> TokenStore:
    """`api.prepare` in a process without torch: the token store of a pretrain config's data."""
    with command_inputs():
        for path in configs:
            reads(path, "the config file")
        cfg = load_config(PretrainConfig, [Path(c) for c in configs], list(overrides), "pretrain config")
        read_inputs(cfg)
        if cfg.data.tokenizer == "spacy":
            _spacy_without_torch()
        return build_store(cfg.data, cfg.run.seed, force=force)


def _spacy_without_torch() -> None:
    """Import spaCy as if torch were not installed. Its thinc imports torch where it can (2 s), for the
    models of spaCy's pipelines; a tokenizer needs none. Only here, in a command that imports no torch
    (the import-linter contract on this module): in another process thinc would lose torch for good."""
    if "torch" in sys.modules or "thinc" in sys.modules:
        return
    sys.modules["torch"] = None  # `import torch` raises ImportError while this stands
    try:
        import spacy  # noqa: F401
    finally:
        del sys.modules["torch"]
