"""`train.optimizer: torch` takes the same steps as fastai's Adam, with slice() rates and freezing."""
import pytest
import torch
from fastai.optimizer import Adam
from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_split
from fastai.text.models.core import get_language_model

from ulmfit_cli.train.learners import awd_config
from ulmfit_cli.train.optim import torch_adamw


def _step(model, opt, x, y):
    out = model(x)[0]
    loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad()


@pytest.mark.parametrize("fused", [False, True])  # foreach (CPU default) and the fused kernel (GPU default)
def test_torch_adamw_matches_fastai_adam_with_slices_moms_and_freezing(fused):
    cfg = awd_config({"emb_sz": 8, "n_hid": 16, "n_layers": 2})
    model, twin = (get_language_model(AWD_LSTM, 50, config=cfg) for _ in range(2))
    twin.load_state_dict(model.state_dict())
    model.eval(), twin.eval()  # no dropout: both copies see the same forward pass
    ours = torch_adamw(awd_lstm_lm_split(twin), lr=1e-2, fused=fused)
    ref = Adam(awd_lstm_lm_split(model), lr=1e-2)
    x, y = torch.randint(0, 50, (4, 12)), torch.randint(0, 50, (4, 12))
    for opt in (ref, ours):
        opt.set_hypers(lr=slice(1e-3, 1e-2), mom=0.8, sqr_mom=0.99, wd=0.01, eps=1e-5)
        opt.freeze_to(-1)
    frozen = [p.clone() for p in twin.parameters() if not p.requires_grad]
    for step in range(6):
        if step == 3:  # unfreeze half-way, as gradual unfreezing does, and move momentum as one-cycle does
            for opt in (ref, ours):
                opt.unfreeze()
                opt.set_hypers(mom=0.7)
            for m in (model, twin):
                m.reset()
        for m, opt in ((model, ref), (twin, ours)):
            m.reset()
            _step(m, opt, x, y)
        if step == 2:
            assert all(torch.equal(a, b) for a, b in zip(frozen, [p for p in twin.parameters() if not p.requires_grad]))
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name
    assert [h["lr"] for h in ours.hypers] == [h["lr"] for h in ref.hypers]


def test_classifier_trains_with_fastais_optimizer(cli, tmp_path, dump, easy_csv):
    from conftest import TINY
    lm = tmp_path / "lm"
    res = cli("pretrain", "-c", TINY, "--set", f"data.source={dump}", "--run-dir", lm)
    assert res.exit_code == 0, res.output
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={easy_csv}", "--set", f"init.from_run={lm}",
              "--set", "train.optimizer=fastai", "--set", "train.stages=[{freeze_to: -1}, {freeze_to: 0}]",
              "--run-dir", tmp_path / "clf")
    assert res.exit_code == 0, res.output


def test_torch_adamw_in_a_learner_skips_weight_decay_on_norm_and_bias_like_fastai():
    """A Learner marks BatchNorm and bias parameters do_wd=False; both optimizers must honour it."""
    import numpy as np
    from fastai.losses import CrossEntropyLossFlat
    from fastai.text.learner import text_classifier_learner
    from fastai.torch_core import set_seed

    from ulmfit_cli.train.loaders import clf_dls
    vocab = ["xxunk", "xxpad", "xxbos", "xxeos"] + [f"w{i}" for i in range(28)]
    rng = np.random.default_rng(0)
    docs = [rng.integers(4, len(vocab), rng.integers(5, 30)) for _ in range(48)]
    ys = np.array([int(d.mean() > 18) for d in docs])
    learners = []
    for opt_func in (Adam, torch_adamw):
        set_seed(0, reproducible=True)
        dls = clf_dls(docs[:40], ys[:40], docs[40:], ys[40:], vocab, 8, 12, torch.device("cpu"))
        learn = text_classifier_learner(dls, AWD_LSTM, config=awd_config({"emb_sz": 8, "n_hid": 16, "n_layers": 2},
                                                                        classifier=True),
                                        pretrained=False, n_out=2, loss_func=CrossEntropyLossFlat(),
                                        opt_func=opt_func, wd=0.3)  # a large wd makes any difference show
        learn.remove_cbs([cb for cb in learn.cbs if type(cb).__name__ == "ProgressCallback"])
        learn.logger = lambda *_: None
        if learners:
            learn.model.load_state_dict(learners[0].model.state_dict())
        learners.append(learn)
    for learn in learners:
        set_seed(1, reproducible=True)
        learn.freeze_to(-1)
        learn.fit_one_cycle(1, 1e-2)
        learn.unfreeze()
        learn.fit_one_cycle(1, slice(1e-3, 1e-2))
    ref, ours = (dict(lrn.model.named_parameters()) for lrn in learners)
    for name, p in ref.items():
        assert torch.allclose(p, ours[name], atol=1e-5, rtol=1e-4), name


def test_the_optimizer_is_built_for_parameters_already_on_the_data_device(tmp_path):
    """AdamW is fused only when it sees GPU parameters, and fastai builds it before moving the model;
    so the learner moves the model first. The meta device stands in for a GPU here."""
    import numpy as np

    from ulmfit_cli.config import LMTrain
    from ulmfit_cli.train.learners import lm_learner
    from ulmfit_cli.train.loaders import stream_lm_dls
    from ulmfit_cli.runs import Run
    vocab = ["xxunk", "xxpad", "xxbos", "xxeos"] + [f"w{i}" for i in range(28)]
    tokens = np.random.default_rng(0).integers(4, len(vocab), 400)
    dls = stream_lm_dls(tokens, tokens[:100], vocab, 4, 10, torch.device("meta"))
    learn = lm_learner(dls, {"emb_sz": 8, "n_hid": 16, "n_layers": 2}, 0.3, LMTrain(bs=4, bptt=10), "fp32",
                       Run(tmp_path), "pretrain")
    learn.create_opt()
    assert {p.device.type for group in learn.opt.param_lists for p in group} == {"meta"}
