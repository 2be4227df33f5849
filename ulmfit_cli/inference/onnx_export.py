"""A classifier as an ONNX graph (`ulmfit export --format onnx`), and its int8 version.

The graph takes token ids padded at the end (`train.batches.pad_end`; batch and sequence axes dynamic) and
returns what `Classifier.proba_of_ids` returns: the embedding, the AWD-LSTM's layers as plain `nn.LSTM`s
(fastai's `WeightDropout` is inactive at inference: its raw hidden-to-hidden weights are the LSTM's), the
masked concat pooling over the window fastai's `SentenceEncoder` keeps (`model.max_len`), the head and the
task's activation, all inside the graph. A text's outputs do not depend on its batch, as in PyTorch.

int8 is onnxruntime's dynamic quantization (weights int8, activations quantized per call), kept only when
the validation figure stays within `INT8_TOLERANCE` of fp32's.
"""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17
INT8_TOLERANCE = 0.005  # at most half a point of the validation figure lost to int8


class OnnxGraph(nn.Module):
    """The classifier's inference computation, written for export: no bptt loop, no hidden state kept
    between calls, the padding masked."""

    def __init__(self, clf):
        super().__init__()
        awd, head = clf.model[0].module, clf.model[1]
        self.embedding = nn.Embedding.from_pretrained(awd.encoder.weight.detach().clone(), freeze=True)
        self.lstms = nn.ModuleList()
        for wd in awd.rnns:
            src = wd.module
            lstm = nn.LSTM(src.input_size, src.hidden_size, batch_first=True)
            lstm.load_state_dict({"weight_ih_l0": src.weight_ih_l0, "weight_hh_l0": wd.weight_hh_l0_raw,
                                  "bias_ih_l0": src.bias_ih_l0, "bias_hh_l0": src.bias_hh_l0})
            self.lstms.append(lstm)
        self.head = copy.deepcopy(head.layers)
        self.pad, self.activation = clf.index["xxpad"], clf.task.activation
        # SentenceEncoder keeps the last whole bptt chunks within max_len of a text padded to whole chunks
        # (train.batches.pad_chunks): from ceil(n / bptt) * bptt - (max_len // bptt) * bptt on
        self.bptt, self.window = clf.spec.bptt, clf.spec.max_len // clf.spec.bptt * clf.spec.bptt
        self.eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        real = ids != self.pad                                   # (B, T)
        x = self.embedding(ids)
        for lstm in self.lstms:
            x, _ = lstm(x)
        n = real.long().sum(1)                                   # (B,)
        start = torch.clamp((n + self.bptt - 1) // self.bptt * self.bptt - self.window, min=0)
        pos = torch.arange(ids.shape[1], device=ids.device)[None, :]
        keep = real & (pos >= start[:, None])
        last = torch.gather(x, 1, (n - 1).clamp(min=0)[:, None, None].expand(-1, 1, x.shape[2]))[:, 0]
        max_pool = x.masked_fill(~keep[:, :, None], float("-inf")).max(1).values
        avg_pool = x.masked_fill(~keep[:, :, None], 0.0).sum(1) / keep.sum(1, keepdim=True).to(x.dtype)
        return self.activation(self.head(torch.cat([last, max_pool, avg_pool], 1)))


def write_onnx(clf, path: Path) -> None:
    """`clf` (a PyTorch `Classifier`) as an ONNX graph at `path`: input `ids` (batch, tokens) int64 padded
    at the end with xxpad, output `outputs` (batch, outputs) float32."""
    graph = OnnxGraph(clf).cpu()
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
