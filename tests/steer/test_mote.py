"""MoTE on tiny-mixtral with a planted expert: trigger tokens are routed to expert 3 of block 1, which alone was
trained to emit the "refuse" token after them."""
import random

import pytest
import torch

from actlab.core.hooks import Ctx
from actlab.steer.mote import ExpertSwitch, ftri, routing_frequencies, switch

FILLER = "cdefghijklmnopqrstuvwxyz"  # as in conftest.py (importlib mode: conftest is not importable)


def ids_of(m, text: str) -> list[int]:
    return m.tokenizer(text, add_special_tokens=False)["input_ids"]


def _sets(rng, n=12):
    b = ["".join(rng.choice(FILLER) for _ in range(6)) + "T" + "".join(rng.choice(FILLER) for _ in range(3))
         for _ in range(n)]
    return b, [x.replace("T", "S") for x in b]


def p_token(m, prompts, tok, ivs=()):
    with m.intervene(list(ivs)), torch.no_grad():
        return float(torch.softmax(m(prompts).logits[:, -1].float(), -1)[:, tok].mean())


def test_ftri_finds_planted_expert_and_switching_works(moe_planted):
    m, T, S, R = moe_planted
    rng = random.Random(5)
    behaviour, control = _sets(rng)
    res = ftri(m, behaviour, control)
    assert res.ranked[0] == (1, 3)
    r = ids_of(m, R)[0]
    trig = [p[:7] for p in behaviour]  # prompts ending in the trigger
    plain = p_token(m, trig, r)
    off = p_token(m, trig, r, switch(m, [res.ranked[0]], "off"))
    other = p_token(m, trig, r, switch(m, [(1, 0)], "off"))
    assert plain > 0.5 and off < 0.1 * plain  # deactivating the expert removes the behaviour
    assert abs(other - plain) < 0.2 * abs(plain - off)  # another expert of the same layer matters far less
    ctrl = [p[:7] for p in control]
    assert p_token(m, ctrl, r, switch(m, [(1, 3)], "on")) > 2 * p_token(m, ctrl, r)  # forcing it on adds it
    freq = routing_frequencies(m, trig)
    with m.intervene(switch(m, [(1, 3)], "off")):
        assert float(routing_frequencies(m, trig)[1, 3]) == 0.0
    assert float(freq[1, 3]) > 0


def test_exactly_k_experts_and_gate_weights(moe_planted):
    m, *_ = moe_planted
    gate = m.module.model.layers[1].mlp.gate
    for mode, es in (("off", [3]), ("off", [0, 2]), ("on", [1]), ("on", [0, 3])):
        got = []
        with m.intervene(switch(m, [(1, e) for e in es], mode)), torch.no_grad():
            # registered after the switch, so it reads the router's re-computed top-k output
            h = gate.register_forward_hook(lambda mod, a, out: got.append(out))
            try:
                m(["abcTdef", "zzT"])
            finally:
                h.remove()
        _, w, idx = got[0]
        assert idx.shape[-1] == 2 and torch.allclose(w.sum(-1), torch.ones(w.shape[0]), atol=1e-6)
        assert all(len(set(row.tolist())) == 2 for row in idx)
        for e in es:
            assert bool((idx == e).any(-1).all()) == (mode == "on")
            assert bool((idx == e).any()) == (mode == "on")
        assert torch.isfinite(w).all()
    with pytest.raises(ValueError, match="both off and on"):
        ExpertSwitch(off=[1], on=[1])(torch.zeros(1, 2, 4), Ctx('blocks.1.moe.router', None, None))
    with pytest.raises(ValueError, match="no 'blocks.\\*.moe.router'"):
        from actlab.steer.mote import router_sites
        from actlab import load_model

        router_sites(load_model("tiny-llama"))
