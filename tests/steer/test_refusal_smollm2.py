"""Harmfulness vs refusal on SmolLM2-135M-Instruct (spec §4 on a real chat model, generation-free measures): the two
directions are nearly orthogonal, and adding the refusal direction moves the reply-inversion judgement less than
adding the harmfulness direction does. (The paper's other effects do not all reproduce on this 135M model; the
measured table is in docs/steer.md.)"""
import pytest

from actlab.steer.refusal import effects, harm_refusal_directions, load_instructions

N = 8
LAYER = 12


@pytest.mark.real
def test_separation_and_effects(smollm2):
    harmful, harmless = load_instructions("harmful")[:N], load_instructions("harmless")[:N]
    res = harm_refusal_directions(smollm2, harmful, harmless, [LAYER], judge="score")
    s = f"blocks.{LAYER}.resid_pre"
    assert abs(res.cos[s]) < 0.2                                   # encoded separately
    eff = effects(smollm2, res, harmful[:4], harmless[:4])
    base, r = eff["base"], eff[s]
    print(eff)
    assert base["refusal_H"] > base["refusal_L"]                   # the measure separates the sets at all
    assert abs(r["add_ref_judge"]) < abs(r["add_harm_judge"])      # refusal steering does not move the judgement
