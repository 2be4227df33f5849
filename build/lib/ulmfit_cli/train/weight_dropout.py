"""AWD-LSTM's weight-dropped LSTMs with their weights in one cuDNN buffer (fp32 on a GPU).

fastai's `WeightDropout` sets a freshly dropped `weight_hh_l0` on its `nn.LSTM` every step, so the
four weights of the LSTM live in four allocations. In fp32 cuDNN then warns "RNN module weights are
not part of single contiguous chunk of memory", and on every call allocates a buffer, zero-fills it
and copies each weight into it. `FlatWeightDropout` builds that buffer itself: one `torch.cat` of the
weights, the dropped one included, in the layout cuDNN expects, and runs the LSTM on views of it. The
values, the dropout mask (the same `F.dropout` call) and the gradients are fastai's.

The layout is asked of cuDNN once per module and device (`torch._cudnn_rnn_flatten_weight`, what
`nn.LSTM.flatten_parameters` uses) and checked once: the LSTM must give the module's own output on
the buffer and must not warn; otherwise the module keeps fastai's path.

Under autocast (fp16, the default on GPUs) PyTorch's autocast wrapper casts all LSTM weights into a
new contiguous half buffer on every call whatever their layout, and the CPU LSTM has no such buffer:
both keep fastai's path. Parameters and state-dict keys are fastai's (only `forward` differs), so
weights move freely between the two classes.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from fastai.text.models.awdlstm import WeightDropout

_FLAT_WEIGHTS_WARNING = "not part of single contiguous chunk"


class FlatWeightDropout(WeightDropout):
    def _weights(self) -> list[torch.Tensor]:
        """The LSTM's weights in cuDNN's order, with this step's weight dropout applied."""
        lstm, raw = self.module, self.weight_hh_l0_raw
        w_hh = F.dropout(raw, p=self.weight_p) if self.training else raw
        return [lstm.weight_ih_l0, w_hh, lstm.bias_ih_l0, lstm.bias_hh_l0]

    def forward(self, input, hx=None):
        layout = self._layout(input, hx)
        if layout is None:
            return super().forward(input, hx) if hx is not None else super().forward(input)
        weights, (sizes, order) = self._weights(), layout
        flat = torch.cat([weights[i].reshape(-1) if i is not None else weights[0].new_zeros(n)
                          for i, n in zip(order, sizes)])
        # split, not slices: its backward is one cat, where each slice's would zero-fill a whole buffer
        views = [None] * len(weights)
        for i, piece in zip(order, flat.split(sizes)):
            if i is not None:
                views[i] = piece.view_as(weights[i])
        lstm = self.module
        out, h, c = torch._VF.lstm(input, hx, views, True, 1, lstm.dropout, self.training, False,
                                   lstm.batch_first)
        return out, (h, c)

    def _layout(self, input, hx):
        """The `buffer_plan` of cuDNN's weight buffer for this input, or None for fastai's path."""
        if hx is None or torch.is_autocast_enabled(input.device.type):
            return None
        layouts = self.__dict__.setdefault("_layouts", {})
        key = (input.device, self.weight_hh_l0_raw.dtype)
        if key not in layouts:
            layouts[key] = _cudnn_layout(self, input, hx, key) if _flattens(self, input) else None
        return layouts[key]


def buffer_plan(offsets: list[int], numels: list[int], total: int) -> tuple[list[int], list[int | None]]:
    """The buffer's pieces in memory order: their sizes, and which weight each holds (None: padding)."""
    sizes, order, end = [], [], 0
    for offset, i in sorted((o, i) for i, o in enumerate(offsets)):
        if offset > end:  # padding that cuDNN's layout leaves between matrices
            sizes.append(offset - end)
            order.append(None)
        sizes.append(numels[i])
        order.append(i)
        end = offset + numels[i]
    if total > end:
        sizes.append(total - end)
        order.append(None)
    return sizes, order


def _flattens(wd: FlatWeightDropout, input) -> bool:
    lstm = wd.module
    return (input.is_cuda and torch.backends.cudnn.is_acceptable(input) and isinstance(lstm, torch.nn.LSTM)
            and lstm.num_layers == 1 and not lstm.bidirectional and lstm.bias and not lstm.proj_size
            and lstm.batch_first and list(wd.layer_names) == ["weight_hh_l0"]
            and wd.weight_hh_l0_raw.dtype == torch.float32)


@torch.no_grad()
def _cudnn_layout(wd: FlatWeightDropout, input, hx, key):
    from torch.backends.cudnn import rnn as cudnn_rnn
    lstm, was_training = wd.module, wd.training
    wd.eval()
    try:
        copies = [w.detach().clone() for w in wd._weights()]  # eval: the raw weights
        flat = torch._cudnn_rnn_flatten_weight(copies, 4, lstm.input_size, cudnn_rnn.get_cudnn_mode("LSTM"),
                                               lstm.hidden_size, 0, 1, lstm.batch_first, False)
        if any(c.untyped_storage().data_ptr() != flat.untyped_storage().data_ptr() for c in copies):
            return None
        layout = buffer_plan([c.storage_offset() for c in copies], [c.numel() for c in copies], flat.numel())
        # The check: on the buffer the LSTM must not warn and must give what the module itself gives.
        x, h = input[:1, :2].detach(), tuple(t[:, :1].detach() for t in hx)
        theirs = WeightDropout.forward(wd, x, h)[0]
        wd._layouts[key] = layout
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ours = wd.forward(x, h)[0]
    except Exception:  # noqa: BLE001  whatever cuDNN or this PyTorch build refuses, fastai's path still works
        return None
    finally:
        wd._layouts.pop(key, None)  # the caller records the answer
        wd.train(was_training)
    if (any(_FLAT_WEIGHTS_WARNING in str(w.message) for w in caught)
            or not torch.allclose(ours, theirs, atol=1e-5)):
        return None
    return layout


def flatten_weight_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Give every fastai `WeightDropout` of `model` the flat-buffer forward (in place)."""
    for m in model.modules():
        if type(m) is WeightDropout:
            m.__class__ = FlatWeightDropout
    return model
