"""GrAInS on a tiny model trained so that a pro token 'A' makes the answer '+' and a con token 'B' makes it '-'."""
import pytest
import torch

from actlab.steer.grains import GrainsConfig, _ids, attribute, contrast, grains, response_logprob


def test_grains_ranks_planted_tokens_and_steers(pro_con):
    m, make = pro_con
    a_prompts = [make("A") for _ in range(3)]
    b_prompts = [make("B") for _ in range(3)]
    res = grains(m, [(p, "+", "-") for p in a_prompts + b_prompts], k=1, steps=8)
    for p, top in zip(a_prompts, res.top_pos[:3]):
        ids = _ids(m, p, True)
        assert m.tokenizer.decode(ids[top[0]]) == "A"  # the pro token ranks first among positive tokens
    for p, top in zip(b_prompts, res.top_neg[3:]):
        ids = _ids(m, p, True)
        assert m.tokenizer.decode(ids[top[0]]) == "B"  # the con token ranks first among negative tokens
    d = res.vectors["blocks.1.resid_post"]
    assert d.method == "grains-mean" and d.meta["apply"] == "norm_add"
    # delta at the last block points along the model's readout difference w_+ - w_- (through the final norm's gain)
    tok = {y: m.tokenizer(y, add_special_tokens=False)["input_ids"][0] for y in "+-"}
    w = m.module.lm_head.weight.detach()
    readout = (w[tok["+"]] - w[tok["-"]]) * m.module.model.norm.weight.detach()
    assert float(torch.nn.functional.cosine_similarity(d.vector, readout, dim=0)) > 0.5  # spec; measured 0.94
    # adding delta (norm-preserving) raises f = log p(+) - log p(-) monotonically on con prompts
    plus, minus = _ids(m, "+", False), _ids(m, "-", False)

    def f(prompt, lam):
        p = _ids(m, prompt, True)
        with m.intervene(d.to_interventions(lam, mode="norm_add")), torch.no_grad():
            lp = response_logprob(m, torch.cat([p, plus])[None], len(p))
            lm = response_logprob(m, torch.cat([p, minus])[None], len(p))
        return float(lp - lm)

    fs = [sum(f(p, lam) for p in b_prompts) for lam in (0.0, 0.5, 1.0, 2.0)]
    assert fs == sorted(fs) and fs[-1] > fs[0] + 1.0
    # contrast() (the effect curve `actlab steer grains --lam` prints) is the mean of the same f
    got = contrast(m, d, [(p, "+", "-") for p in b_prompts], [0.0, 0.5, 1.0, 2.0])
    assert got == pytest.approx([x / len(b_prompts) for x in fs], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("tag", ["A", "B", ""])
def test_ig_completeness(pro_con, tag):
    """Spec: the scores of every interpolated position (prompt and both responses) sum to f(x) - f(baseline)
    within 2% for 50+ steps; f(x) - f(baseline) is computed independently with two plain forward passes."""
    m, make = pro_con
    p = _ids(m, make(tag), True)
    plus, minus = _ids(m, "+", False), _ids(m, "-", False)
    s, sa, sb, total = attribute(m, p, plus, minus, steps=64)
    assert s.shape == (len(p),) and sa.shape == (1,) and sb.shape == (1,)
    emb = m.module.get_input_embeddings()
    mu = emb.weight.detach().mean(0)

    def f(baseline: bool) -> float:
        out = 0.0
        for sign, y in ((1.0, plus), (-1.0, minus)):
            ids = torch.cat([p, y])
            e = emb(ids[None]).detach()
            if baseline:  # mean_norm: the mean embedding's direction at each token's norm
                e = mu / mu.norm() * e.norm(dim=-1, keepdim=True)
            with torch.no_grad():
                out += sign * float(response_logprob(m, ids[None], len(p), e)[0])
        return out

    expected = f(False) - f(True)
    assert total == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert float(s.sum() + sa.sum() + sb.sum()) == pytest.approx(expected, rel=0.02, abs=0.01)
    if tag == "A":
        assert expected > 1.0 and float(s.max()) > 0
    if tag == "B":
        assert expected < -1.0 and float(s.min()) < 0


def test_config_errors():
    with pytest.raises(ValueError, match="attribution='shap'"):
        GrainsConfig(attribution="shap")
    with pytest.raises(ValueError, match="reduction="):
        GrainsConfig(reduction="median")


def test_reductions():
    """mean = the mean shift; pca_uncentered = the unit PC1 of the raw shifts (follows a consistent mean shift);
    pca_centered (the reference's sklearn PCA) = the unit PC1 of the centred shifts, which discards the mean shift;
    both PCA signs are aligned with the mean shift."""
    from actlab.steer.grains import _reduce

    g = torch.Generator().manual_seed(0)
    u, w = torch.eye(8)[0], torch.eye(8)[1]
    d = -3.0 * u + torch.randn(200, 1, generator=g) * w + 0.01 * torch.randn(200, 8, generator=g)  # shift along -u
    assert torch.allclose(_reduce(d, "mean"), d.mean(0))
    unc = _reduce(d, "pca_uncentered")
    assert float(unc @ -u) > 0.95 and float(unc.norm()) == pytest.approx(1.0, abs=1e-5)
    cen = _reduce(d, "pca_centered")
    assert abs(float(cen @ w)) > 0.95 and float(cen @ d.mean(0)) >= 0
    for how in ("pca_uncentered", "pca_centered"):
        assert torch.allclose(_reduce(-d, how), -_reduce(d, how), atol=1e-5)  # the sign follows the mean shift
