"""The command that runs without torch or fastai: `ulmfit predict` on bundles exported with `--format onnx`
(what a deployment installs: docs/deploying.md). The CLI comes here when every `--model` is such a bundle and
nothing asks for PyTorch (`chooses_onnx`); `api.predict` is the same command for every classifier."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ulmfit_cli.corpus.tables import check_table_output
from ulmfit_cli.files import check_output, command_inputs, reads
from ulmfit_cli.inference.predict import predict_table
from ulmfit_cli.inference.runtime import chooses_onnx, load_onnx
from ulmfit_cli.train.batches import MAX_ROWS, MAX_TOKENS

__all__ = ["chooses_onnx", "predict"]  # chooses_onnx: whether the CLI comes here


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
