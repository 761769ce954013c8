"""GrAInS on a tiny model trained so that a pro token 'A' makes the answer '+' and a con token 'B' makes it '-'."""
import pytest
import torch

from actlab.steer.grains import GrainsConfig, _ids, attribute, grains, response_logprob


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


def test_attribution_scores_and_config_errors(pro_con):
    m, make = pro_con
    p = _ids(m, make("A"), True)
    s, sa, sb, total = attribute(m, p, _ids(m, "+", False), _ids(m, "-", False), steps=16)
    assert s.shape == (len(p),) and sa.shape == (1,) and sb.shape == (1,)
    assert total > 0 and float(s.max()) > 0
    with pytest.raises(ValueError, match="attribution='shap'"):
        GrainsConfig(attribution="shap")
    with pytest.raises(ValueError, match="reduction="):
        GrainsConfig(reduction="median")
