"""Planted-dictionary recovery per architecture, exact resume, bad inputs."""
import math

import pytest
import torch

from actlab.dictionary import DictConfig, load
from actlab.dictionary.data import tensor_source
from actlab.dictionary.synthetic import planted, recovered
from actlab.dictionary.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def data():
    return planted(16384, d=32, m=128, p=0.03, noise=0.01, seed=11)


@pytest.fixture(scope="module")
def small():
    """d = 32, 64 atoms, each active w.p. 0.04 (2.6 per row), noise 0.01: a 2x overcomplete planted dictionary."""
    return planted(8192, d=32, m=64, p=0.04, noise=0.01, seed=11)


# (arch, config, batch, lr); 10 epochs of 8192 rows, 128 latents; calibrated once on this data (1 thread).
# BatchTopK needs a larger batch than the others: its per-batch budget of B*k latents is noisy at B = 64.
PLANTED = [("topk", {"k": 3}, 64, 3e-3), ("batchtopk", {"k": 3}, 256, 1e-2), ("relu", {"l1_coef": 2.0}, 64, 3e-3),
           ("jumprelu", {"l1_coef": 2.0, "jump_init_threshold": 1.0}, 64, 3e-3), ("gated", {"l1_coef": 5.0}, 64, 3e-3)]


@pytest.mark.parametrize("arch,kw,bs,lr", PLANTED)
def test_planted_recovery(small, arch, kw, bs, lr):
    x, D, _ = small
    dc = DictConfig(arch=arch, d_in=32, d_sae=128, **kw)
    tc = TrainConfig(total_tokens=8192 * 10, batch_size=bs, lr=lr, warmup_steps=10, progress=False,
                     dead_tokens=5000)
    m = Trainer(dc, tc, tensor_source(x, bs)).fit()
    assert recovered(D, m.W_dec.detach(), 0.9) >= 0.9
    with torch.no_grad():
        l0 = float((m.encode(x[:2000]) != 0).float().sum(1).mean())
    assert l0 < 4 * 2.56, l0                        # sparse: 64 atoms active w.p. 0.04 = 2.56 per row
    # the folded model works on raw activations: its reconstructions explain most of the variance
    with torch.no_grad():
        err = m(x[:2000]) - x[:2000]
    fvu = float(err.pow(2).sum() / (x[:2000] - x[:2000].mean(0)).pow(2).sum())
    assert fvu < 0.35, fvu


def test_random_dictionary_does_not_recover(data):
    """Control: the recovery score is not trivially high for an untrained dictionary of the same size."""
    x, D, _ = data
    m = Trainer(DictConfig(arch="topk", d_in=32, d_sae=256, k=4),
                TrainConfig(total_tokens=256, batch_size=256, progress=False), tensor_source(x, 256)).model
    assert recovered(D, m.W_dec.detach(), 0.9) < 0.1


def test_resume_is_exact(tmp_path, data):
    x, _, _ = data
    x = x[:4096]
    dc = DictConfig(arch="batchtopk", d_in=32, d_sae=64, k=4)

    def tc(out):
        return TrainConfig(total_tokens=20 * 128, batch_size=128, lr=3e-3, warmup_steps=5, progress=False,
                           out=str(out), checkpoint_every=10, dead_tokens=300, seed=7)

    full = Trainer(dc, tc(tmp_path / "full"), tensor_source(x, 128, seed=1)).fit()
    import json
    assert json.loads((tmp_path / "full" / "checkpoint.json").read_text())["latest"] == "ckpt-00000020"  # the end

    calls = {"n": 0}
    base = tensor_source(x, 128, seed=1)

    def crashing(epoch):
        for b in base(epoch):
            calls["n"] += 1
            if calls["n"] > 13:
                raise RuntimeError("simulated crash")
            yield b
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(dc, tc(tmp_path / "run"), crashing).fit()
    assert (tmp_path / "run" / "ckpt-00000010").exists()
    resumed_tr = Trainer(dc, tc(tmp_path / "run"), tensor_source(x, 128, seed=1))
    assert resumed_tr.state.step == 10
    resumed = resumed_tr.fit()
    for (n1, p1), (n2, p2) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(p1, p2), n1
    again = load(tmp_path / "run")
    assert torch.equal(again.W_dec, full.W_dec) and again.cfg.train["steps"] == 20
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20]                  # the crashed run's lines after the checkpoint were dropped


def test_bad_inputs(data):
    x, _, _ = data
    dc = DictConfig(arch="topk", d_in=16, d_sae=32, k=2)
    tc = TrainConfig(total_tokens=512, batch_size=128, progress=False)
    with pytest.raises(ValueError, match="d_in mismatch"):
        Trainer(dc, tc, tensor_source(x, 128)).fit()
    bad = x[:1024, :16].clone()
    bad[5, 3] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        Trainer(dc, tc, tensor_source(bad, 128, shuffle=False)).fit()
    from actlab.dictionary.data import check_batch
    for vals in ([math.inf, -math.inf], [3e38, 3e38], [math.inf, 1.0]):   # +inf-inf: the one-sum test sees nan
        t = torch.zeros(4, 16)
        t[1, :2] = torch.tensor(vals)
        if all(math.isfinite(v) for v in vals):
            assert check_batch(t, 16) is t                  # huge but finite: the float64 sum does not overflow
        else:
            with pytest.raises(ValueError, match="1 of 4 rows"):
                check_batch(t, 16)
    with pytest.raises(ValueError, match="k=99"):
        DictConfig(arch="topk", d_in=16, d_sae=32, k=99)
    with pytest.raises(ValueError, match="unknown architecture"):
        DictConfig(arch="nope", d_in=16)
    with pytest.raises(ValueError, match="transcoder needs"):
        Trainer(DictConfig(arch="topk", d_in=16, d_out=8, d_sae=32, k=2), tc,
                tensor_source(x[:, :16], 128)).fit()


def test_transcoder_recovers_a_planted_mlp():
    """The spec's check: a ReLU transcoder on (x, MLP(x)) of a planted sparse MLP reaches normalised MSE < 0.05 and
    its encoder rows match the MLP's input weights (MMCS > 0.9; every hidden unit matched at cos > 0.9)."""
    from actlab.dictionary.synthetic import mmcs, planted_mlp
    x, y, W_in, W_out = planted_mlp(8192, seed=0)
    dc = DictConfig(arch="relu", d_in=32, d_out=32, d_sae=128, l1_coef=0.2)
    tc = TrainConfig(total_tokens=8192 * 16, batch_size=128, lr=1e-2, warmup_steps=10, progress=False,
                     dead_tokens=5000, checkpoint_minutes=0)
    t = Trainer(dc, tc, tensor_source(x, 128, y=y)).fit()
    xt = torch.randn(4000, 32, generator=torch.Generator().manual_seed(99))   # held-out inputs, same MLP
    yt = (xt @ W_in.t() - 1.5).relu() @ W_out.t()
    with torch.no_grad():
        acts, pred = t.encode_decode(xt)
    nmse = float((pred - yt).pow(2).sum() / (yt - yt.mean(0)).pow(2).sum())
    assert nmse < 0.05, nmse
    score, per_unit = mmcs(W_in, t.W_enc.detach())
    assert score > 0.9 and float(per_unit.min()) > 0.9, (score, float(per_unit.min()))
    assert float((acts != 0).float().sum(1).mean()) < 2 * 4.3       # sparse: ~4.3 hidden units active per row


def test_training_folder_is_locked(tmp_path, data):
    """A second training into a folder in use is refused, naming the holder's pid; the lock goes with the run."""
    import os

    from actlab.artifact import folder_lock
    x, _, _ = data
    dc = DictConfig(arch="topk", d_in=32, d_sae=64, k=4)
    tc = TrainConfig(total_tokens=512, batch_size=128, progress=False, out=str(tmp_path / "run"))
    with folder_lock(tmp_path / "run", what="another training"):
        with pytest.raises(ValueError, match=f"in use by another actlab process \\(pid {os.getpid()}\\)"):
            Trainer(dc, tc, tensor_source(x, 128))
    tr = Trainer(dc, tc, tensor_source(x, 128))
    with folder_lock(tmp_path / "run", what="another training"):
        with pytest.raises(ValueError, match="in use by another actlab process"):
            tr.fit()
    tr.fit()
    assert load(tmp_path / "run").cfg.train["steps"] == 4
