"""Device-side training statistics: the same figures as fastai's, and no per-batch host copies."""
import sys

import numpy as np
import pytest
import torch
from fastai.metrics import Perplexity, accuracy
from fastai.text.learner import language_model_learner
from fastai.text.models.awdlstm import AWD_LSTM
from fastai.torch_core import set_seed

from ulmfit_cli.train.device_metrics import DeviceAvgMetric, DevicePerplexity, keep_on_device
from ulmfit_cli.train.learners import awd_config
from ulmfit_cli.train.loaders import stream_lm_dls
from ulmfit_cli.train.optim import torch_adamw

VOCAB = ["xxunk", "xxpad", "xxbos", "xxeos"] + [f"w{i}" for i in range(60)]


def _learner(n_tokens: int, on_device: bool):
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, len(VOCAB), n_tokens)
    dls = stream_lm_dls(tokens, tokens[:400], VOCAB, 4, 10, torch.device("cpu"))
    metrics = [DeviceAvgMetric(accuracy), DevicePerplexity()] if on_device else [accuracy, Perplexity()]
    learn = language_model_learner(dls, AWD_LSTM, config=awd_config({"emb_sz": 8, "n_hid": 16, "n_layers": 2}),
                                   pretrained=False, metrics=metrics, opt_func=torch_adamw)
    learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ == "ProgressCallback"])
    learn.logger = lambda *_: None
    return keep_on_device(learn) if on_device else learn


def test_device_statistics_equal_fastais():
    figures = []
    for on_device in (False, True):
        set_seed(0, reproducible=True)
        learn = _learner(2000, on_device)
        learn.fit_one_cycle(2, 1e-2)
        figures.append((np.array(learn.recorder.values, dtype=float),
                        np.array([float(v) for v in learn.recorder.losses])))
    (stock_values, stock_losses), (ours_values, ours_losses) = figures
    assert np.allclose(stock_values, ours_values, rtol=1e-5)
    assert np.allclose(stock_losses, ours_losses, rtol=1e-5)


def _host_reads_from_callbacks(n_tokens: int, on_device: bool, monkeypatch) -> int:
    """Calls from fastai or ulmfit code that copy a tensor to Python (each one waits for a GPU)."""
    count = 0

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, **k):
            nonlocal count
            caller = sys._getframe(1).f_globals.get("__name__", "")
            # fastai's one-cycle schedule reads its own CPU tensor of phase bounds: never a GPU wait
            count += caller.startswith(("fastai", "ulmfit_cli")) and caller != "fastai.callback.schedule"
            return original(self, *a, **k)
        return wrapper

    learn = _learner(n_tokens, on_device)
    with monkeypatch.context() as m:
        for name in ("item", "cpu", "tolist", "numpy", "__float__"):
            m.setattr(torch.Tensor, name, counting(name))
        learn.fit_one_cycle(1, 1e-2)
    return count


@pytest.mark.parametrize("on_device", [False, True])
def test_no_host_copy_per_batch(on_device, monkeypatch):
    short, long = (_host_reads_from_callbacks(n, on_device, monkeypatch) for n in (1000, 4000))
    if on_device:  # reads happen per epoch only: four times the batches, the same count
        assert short == long
    else:  # fastai's own statistics copy every batch: this is what the test can see
        assert long > short
