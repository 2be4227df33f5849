"""A classifier as an ONNX graph (`ulmfit export --format onnx`), and its int8 version.

The graph is the PyTorch path's `inference.net.InferenceNet` traced: token ids padded at the end in, the
task's outputs out, with the batch and sequence axes dynamic; the embedding, the plain LSTMs, the pooling, the
head and the activation are all inside it.

int8 is onnxruntime's dynamic quantization (weights int8, activations quantized per call), kept only when
the validation figure stays within `INT8_TOLERANCE` of fp32's.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

OPSET = 17
INT8_TOLERANCE = 0.005  # at most half a point of the validation figure lost to int8


def write_onnx(clf, path: Path) -> None:
    """`clf` (a PyTorch `Classifier`) as an ONNX graph at `path`: input `ids` (batch, tokens) int64 padded
    at the end with xxpad, output `outputs` (batch, outputs) float32."""
    graph = clf.net.cpu()
    example = torch.full((2, 2 * clf.spec.bptt + 3), graph.pad, dtype=torch.int64)
    example[:, 0] = clf.index["xxbos"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on LSTM batch sizes and deprecations
        torch.onnx.export(graph, (example,), str(path), input_names=["ids"], output_names=["outputs"],
                          dynamic_axes={"ids": {0: "batch", 1: "tokens"}, "outputs": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)


def quantize_int8(fp32: Path, int8: Path) -> None:
    """onnxruntime's dynamic quantization of `fp32` into `int8`: the LSTM, MatMul and Gather (embedding)
    weights as int8, activations quantized on the fly per call."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    logging.disable(logging.WARNING)  # its advice (on the root logger) to run its pre-processing first
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
