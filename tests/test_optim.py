"""`train.optimizer: torch` takes the same steps as fastai's Adam, with slice() rates and freezing."""
import torch
from fastai.optimizer import Adam
from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_lm_split
from fastai.text.models.core import get_language_model

from ulmfit_cli.learners import awd_config
from ulmfit_cli.optim import torch_adamw


def _step(model, opt, x, y):
    out = model(x)[0]
    loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad()


def test_torch_adamw_matches_fastai_adam_with_slices_moms_and_freezing():
    cfg = awd_config({"emb_sz": 8, "n_hid": 16, "n_layers": 2})
    model, twin = (get_language_model(AWD_LSTM, 50, config=cfg) for _ in range(2))
    twin.load_state_dict(model.state_dict())
    model.eval(), twin.eval()  # no dropout: both copies see the same forward pass
    ours = torch_adamw(awd_lstm_lm_split(twin), lr=1e-2)
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


def test_pipeline_trains_with_the_torch_optimizer(cli, tmp_path, dump, easy_csv):
    from conftest import TINY
    lm = tmp_path / "lm"
    res = cli("pretrain", "-c", TINY, "--set", f"data.source={dump}", "--set", "train.optimizer=torch",
              "--run-dir", lm)
    assert res.exit_code == 0, res.output
    res = cli("train-clf", "-c", TINY, "--set", f"data.train={easy_csv}", "--set", f"init.from_run={lm}",
              "--set", "train.optimizer=torch", "--set", "train.stages=[{freeze_to: -1}, {freeze_to: 0}]",
              "--run-dir", tmp_path / "clf")
    assert res.exit_code == 0, res.output
