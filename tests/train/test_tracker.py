"""Checkpoint tracker and metrics: log-spaced schedule, checkpoints as artifacts (round trip), one JSONL, plots, the
emergence fit of actlab.stats on a planted time course; each metric against a planted ground truth."""

import numpy as np
import pytest
import torch

from actlab import Model
from actlab.core.interventions import Fn
from actlab.stats import exp_log_curve
from actlab.train import (
    CheckpointTracker,
    PrevTokenPattern,
    induction_metric,
    load_checkpoint,
    log_spaced_steps,
    massive_metric,
    probe_metric,
    read_metrics,
    sparsity_metric,
    variance_metric,
)
from actlab.train.toy import PATTERN, AttnOnly, head_scores, repeated_pairs


def test_log_spaced_steps():
    s = log_spaced_steps(1000, 10)
    assert s[0] == 0 and s[-1] == 1000 and s == sorted(set(s)) and len(s) <= 10
    gaps = np.diff(s[1:])
    assert gaps[-1] > 10 * gaps[0]  # log spacing: late gaps much larger than early ones
    with pytest.raises(ValueError, match="total >= 1"):
        log_spaced_steps(0, 5)


def toy(seed=0):
    torch.manual_seed(seed)
    return Model(AttnOnly(vocab=16, d_model=32, n_heads=4, context=16), None, name="toy")


PARAMS = {"A": 40.0, "lam": 3e-3, "log_tau": np.log(30.0), "t0": 20.0, "K": 1.0}


def test_tracker_saves_artifacts_measures_and_fits(tmp_path):
    m = toy()
    opt = torch.optim.SGD(m.module.parameters(), lr=0.1)
    ids = torch.randint(16, (8, 16), generator=torch.Generator().manual_seed(0))
    planted = {"curve": lambda model: float(exp_log_curve(np.array([step]), *PARAMS.values())[0]),
               "norm": lambda model: [float(p.norm()) for p in model.module.blocks.parameters()]}
    tr = CheckpointTracker(tmp_path, total_steps=600, steps=list(range(0, 601, 60)), metrics=planted)
    for step in range(601):
        if not tr.due(step):
            assert tr.on_step_end(step, m) is None  # off-schedule steps do nothing
            continue
        loss = torch.nn.functional.cross_entropy(m(ids)[:, :-1].reshape(-1, 16), ids[:, 1:].reshape(-1))
        if step == 300:  # the state saved at step 300 (before its update)
            snap = {k: v.clone() for k, v in m.module.state_dict().items()}
        tr.on_step_end(step, m, loss=loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    recs = read_metrics(tmp_path)
    assert [r["step"] for r in recs] == tr.steps and all("loss" in r and len(r["norm"]) == 4 for r in recs)
    fresh = AttnOnly(vocab=16, d_model=32, n_heads=4, context=16)
    assert load_checkpoint(tmp_path / "checkpoints" / "step-300", fresh) == 300
    assert all(torch.equal(fresh.state_dict()[k], snap[k]) for k in snap)
    fit = tr.fit_emergence("curve")[0]
    assert fit.r2 > 0.99 and abs(fit.params["A"] - 40.0) / 40.0 < 0.1
    png = tr.plot(["curve", "loss", "norm"])
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(KeyError, match="no metric 'nope'.*curve"):
        tr.series("nope")
    with pytest.raises(KeyError, match="does not fit"):
        load_checkpoint(tmp_path / "checkpoints" / "step-0", torch.nn.Linear(2, 2))


def test_sparsity_and_massive_metrics_on_planted_activations():
    class Planted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.act = torch.nn.Identity()
            self.resid = torch.nn.Identity()

        def forward(self, ids):
            b, t = ids.shape
            a = torch.zeros(b, t, 50)
            a[..., :7] = 1.0                                      # exactly 7 of 50 units active per token
            self.act(a)
            h = torch.randn(b, t, 32, generator=torch.Generator().manual_seed(0))
            h[:, 0, 5] = -5000.0                                  # a massive (negative) activation at (pos 0, channel 5)
            return self.resid(h)

    m = Model(Planted(), None, name="planted")
    ids = torch.zeros(4, 16, dtype=torch.long)
    sp = sparsity_metric(["module:act"], ids)(m)
    assert sp == [pytest.approx(7 / 50, abs=1e-7)]
    ms = massive_metric(["module:resid"], ids, batch_size=2)(m)
    assert ms["top1"] == [5000.0] and ms["ratio"][0] > 1000


def test_induction_metric_is_one_under_an_ideal_induction_pattern():
    m = toy()
    probe = repeated_pairs(4, 6, 16, torch.Generator().manual_seed(1))

    def ideal_induction(a, ctx):
        out = torch.zeros_like(a)
        t = torch.arange(6, 12)
        out[:, :, t, t - 6 + 1] = 1.0
        out[:, :, :6] = a[:, :, :6]
        return out

    metric = induction_metric(PATTERN.format(i=1), probe, 6)
    base = metric(m)
    with m.intervene({PATTERN.format(i=1): Fn(fn=ideal_induction)}):
        assert metric(m) == [1.0] * 4
    assert max(base) < 0.5
    with m.intervene({PATTERN.format(i=0): PrevTokenPattern(heads=[1, 3])}):
        prev = head_scores(m, probe, 6)["prev_token"][0]
    assert prev[1] == 1.0 and prev[3] == 1.0 and max(prev[0], prev[2]) < 0.9


def test_probe_metric_reads_a_site():
    m = toy()
    g = torch.Generator().manual_seed(2)
    x = torch.randint(16, (200, 8), generator=g)
    y = (x[:, 0] < 8).long()  # the first token's identity is linearly readable from its embedding
    acc = probe_metric("module:embed", x[:150], y[:150], x[150:], y[150:], position=0)(m)
    assert acc == 1.0
    shuffled = y[torch.randperm(200, generator=g)]
    assert probe_metric("module:embed", x[:150], shuffled[:150], x[150:], shuffled[150:], position=1)(m) < 0.75


def test_variance_metric_planted_feature_explains_everything():
    m = toy()
    g = torch.Generator().manual_seed(3)
    x = torch.randint(16, (120, 8), generator=g)
    feats = {"first_token": x[:, 0], "random": torch.randint(4, (120,), generator=g)}
    got = variance_metric(["module:embed"], x, feats, position=0)(m)
    assert got["first_token"][0] == pytest.approx(1.0, abs=1e-9)        # the embedding is a function of the token
    assert got["random"][0] < 0.1
    from actlab.stats import variance_explained
    emb = m.record(x, ["module:embed"])["module:embed"][:, 0]
    assert got["random"][0] == pytest.approx(variance_explained(emb, feats["random"]), abs=1e-12)
    with pytest.raises(ValueError, match="119 labels for 120 inputs"):
        variance_metric(["module:embed"], x, {"bad": x[:119, 0]})
