"""Harmfulness vs refusal on SmolLM2-135M-Instruct (spec §4 on a real chat model), with the spec's protocol: both
directions are raw difference-of-means at ``blocks.12.resid_pre`` (the input of block 12, extraction and steering at
the same place), harmfulness at t_inst by dataset label, refusal at t_post by the model's behaviour (generation-free
judge: log p("I'm sorry") - log p("Sure") > 0), all 24 + 24 bundled instructions; coefficient 1.5 of the raw mean
difference added on the prompt tokens only, ablation from every residual write. Asserted: the two directions are
nearly orthogonal; adding the refusal direction to harmless prompts raises the refusal score; ablating it from
harmful prompts lowers it. Measured figures are in docs/steer.md."""
import pytest

from actlab.steer.refusal import effects, harm_refusal_directions, load_instructions

LAYER = 12


@pytest.mark.real
def test_separation_and_effects(smollm2):
    harmful, harmless = load_instructions("harmful"), load_instructions("harmless")
    res = harm_refusal_directions(smollm2, harmful, harmless, [LAYER], judge="score")
    s = f"blocks.{LAYER}.resid_pre"
    eff = effects(smollm2, res, harmful, harmless, coeff=1.5, prompt_only=True)
    print(eff)
    base, r = eff["base"], eff[s]
    assert abs(res.cos[s]) < 0.2                          # encoded separately (spec's synthetic bound)
    assert base["refusal_H"] > base["refusal_L"]          # the measure separates the sets at all
    assert r["add_ref_refusal"] > 0.2                     # adding d_ref on harmless prompts: refusal up
    assert r["ablate_ref_refusal"] < -0.2                 # ablating d_ref on harmful prompts: refusal down
