"""A trained classifier's inference computation as plain PyTorch modules, on the fastai model's own weights:
what the PyTorch path runs, and what `ulmfit export --format onnx` traces.

fastai's classifier reads a batch in bptt chunks (`SentenceEncoder`), through `WeightDropout`-wrapped LSTMs
whose hidden state it keeps between chunks, with dropout modules that do nothing at inference; for one short
text that is several milliseconds of Python around a millisecond of arithmetic. `InferenceNet` computes the
same outputs in one call: the embedding, the AWD-LSTM's layers as plain `nn.LSTM`s over the whole text
(`WeightDropout` is inactive at inference: its raw hidden-to-hidden weights are the LSTM's), fastai's masked
concat pooling (last state, max, mean) over the window `SentenceEncoder` keeps (`model.max_len`), the head
(BatchNorm, Linear, ReLU, eval mode) and the task's activation. Texts are padded at the end
(`train.batches.pad_end`) and the padding masked, so a text's outputs do not depend on its batch. Tests hold
it to fastai's model on its DataLoader path (1e-6).
"""
from __future__ import annotations

import torch
from torch import nn


class InferenceNet(nn.Module):
    """A fastai AWD-LSTM classifier's inference computation, sharing its weights: no bptt loop, no hidden
    state kept between calls, no dropout modules, the padding masked."""

    def __init__(self, model: nn.Module, pad: int, activation, bptt: int, max_len: int):
        super().__init__()
        awd, head = model[0].module, model[1]
        self.embedding = nn.Embedding.from_pretrained(awd.encoder.weight, freeze=True)
        self.lstms = nn.ModuleList()
        for wd in awd.rnns:
            src = wd.module
            lstm = nn.LSTM(src.input_size, src.hidden_size, batch_first=True, device="meta")
            for name, weight in (("weight_ih_l0", src.weight_ih_l0), ("weight_hh_l0", wd.weight_hh_l0_raw),
                                 ("bias_ih_l0", src.bias_ih_l0), ("bias_hh_l0", src.bias_hh_l0)):
                setattr(lstm, name, weight)  # the same tensors: no copy
            if weight.is_cuda:  # cuDNN's one buffer (the fastai model's parameters become views of it)
                lstm.flatten_parameters()
            self.lstms.append(lstm)
        self.head = head.layers
        self.pad, self.activation = pad, activation
        # SentenceEncoder keeps the last whole bptt chunks within max_len of a text padded to whole chunks
        # (train.batches.pad_chunks): from ceil(n / bptt) * bptt - (max_len // bptt) * bptt on
        self.bptt, self.window = bptt, max_len // bptt * bptt
        self.eval()

    def window_start(self, n: int) -> int:
        """The first position (in the model's order) the pooling reads of a text of n tokens."""
        return max(0, -(-n // self.bptt) * self.bptt - self.window)

    def forward(self, ids: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        """`real`: the tokens that are not padding (default `ids != pad`); explanations pass the input's, so
        that Integrated Gradients' all-padding baseline is read over the same positions."""
        real = ids != self.pad if real is None else real          # (B, T)
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
