"""FlatWeightDropout: fastai's weight-dropped LSTM on one weight buffer, with fastai's values and gradients.

cuDNN's layout is asked of cuDNN on a GPU; here (CPU) the buffer gets the plain order of the weights, which
exercises the same code: dropout, one cat, views, the LSTM on the views, gradients back to the parameters.
"""
import torch
from fastai.text.models.awdlstm import AWD_LSTM, WeightDropout
from fastai.text.models.core import get_language_model

from ulmfit_cli.train.learners import awd_config
from ulmfit_cli.train.weight_dropout import FlatWeightDropout, _cudnn_layout, buffer_plan, flatten_weight_dropout


def _sizes(wd):
    return [wd.module.weight_ih_l0.numel(), wd.weight_hh_l0_raw.numel(), wd.module.bias_ih_l0.numel(),
            wd.module.bias_hh_l0.numel()]


def _plain_layout(wd):
    sizes = _sizes(wd)
    return buffer_plan([sum(sizes[:i]) for i in range(4)], sizes, sum(sizes))


def test_flat_buffer_gives_fastais_outputs_masks_and_gradients():
    config = awd_config({"emb_sz": 8, "n_hid": 16, "n_layers": 3})
    ref = get_language_model(AWD_LSTM, 40, config=config)
    ours = flatten_weight_dropout(get_language_model(AWD_LSTM, 40, config=config))
    ours.load_state_dict(ref.state_dict())
    flat = [m for m in ours.modules() if isinstance(m, FlatWeightDropout)]
    assert len(flat) == 3 and not any(type(m) is WeightDropout for m in ours.modules())
    assert ours.state_dict().keys() == ref.state_dict().keys()
    cpu = torch.device("cpu")
    for m in flat:  # as on a GPU, with gaps and the biases first, to cover padding and order
        ih, hh, b1, b2 = sizes = _sizes(m)
        plan = buffer_plan([b1 + b2 + 3, b1 + b2 + 3 + ih + 2, 0, b1], sizes, sum(sizes) + 9)
        assert plan == ([b1, b2, 3, ih, 2, hh, 4], [2, 3, None, 0, None, 1, None])
        m._layouts = {(cpu, torch.float32): plan}
    x, y = torch.randint(0, 40, (4, 9)), torch.randint(0, 40, (4, 9))
    for mode in ("train", "eval"):
        results = []
        for model in (ref, ours):
            getattr(model, mode)()
            model.reset()
            model.zero_grad()
            torch.manual_seed(1)  # the same dropout masks, weight dropout included
            for _ in range(2):  # twice: the hidden state carries over
                out = model(x)[0]
            torch.nn.functional.cross_entropy(out.reshape(-1, 40), y.reshape(-1)).backward()
            results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        (ref_out, ref_grads), (our_out, our_grads) = results
        assert torch.allclose(ref_out, our_out, atol=1e-6), mode
        for name, g in ref_grads.items():
            assert torch.allclose(g, our_grads[name], atol=1e-6), (mode, name)
        assert our_grads["0.rnns.0.weight_hh_l0_raw"].abs().sum() > 0


def test_fastais_path_without_a_cudnn_layout_and_under_autocast():
    model = flatten_weight_dropout(get_language_model(AWD_LSTM, 40, config=awd_config(
        {"emb_sz": 8, "n_hid": 16, "n_layers": 2})))
    model.reset()
    model(torch.randint(0, 40, (2, 5)))  # CPU: no cuDNN buffer to build
    flat = [m for m in model.modules() if isinstance(m, FlatWeightDropout)]
    assert all(m._layouts == {(torch.device("cpu"), torch.float32): None} for m in flat)
    m = flat[0]
    m._layouts = {(torch.device("cpu"), torch.float32): _plain_layout(m)}
    x, hx = torch.zeros(2, 5, 8), (torch.zeros(1, 2, 16), torch.zeros(1, 2, 16))
    assert m._layout(x, hx) == _plain_layout(m)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast re-flattens the weights itself
        assert m._layout(x, hx) is None
    m._layouts = {}
    m.train()
    assert _cudnn_layout(m, x, hx, (torch.device("cpu"), torch.float32)) is None  # no cuDNN here: the failure is caught, fastai's path kept
    assert m._layouts == {} and m.training
