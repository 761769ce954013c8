"""MoTE beyond softmax top-k: Qwen-MoE (softmax top-k, no renormalisation, shared expert) and DeepSeek-V3 (sigmoid
scores + bias, group-limited top-k, routed_scaling_factor 2.5) on tiny configs. Switches act on the selection:
exactly k experts per token, off experts never chosen, forced ones always, gate weights as the model's own rule
gives them (spec §5 sanity check); fTRI finds a planted DeepSeek expert and switching it moves the behaviour."""
import pytest
import torch

from actlab.models.tiny import tiny_model
from actlab.steer.mote import ftri, routing_frequencies, switch

PROMPTS = ["abTdef", "zzTq", "hello there"]


def router_out(m, ivs):
    gate = m.module.model.layers[1].mlp.gate
    got = []
    with m.intervene(ivs), torch.no_grad():
        h = gate.register_forward_hook(lambda mod, a, out: got.append(out))  # after the switch: the rebuilt routing
        try:
            m(PROMPTS)
        finally:
            h.remove()
    return got[0]


@pytest.mark.parametrize("name", ["tiny-qwen-moe", "tiny-deepseek-v3"])
def test_switch_selects_exactly_k_with_the_models_weights(name):
    m = tiny_model(name)
    k = m.adapter.experts_per_token
    for mode, es in (("off", [3]), ("off", [0, 5]), ("on", [2]), ("on", [1, 6])):
        logits, w, idx = router_out(m, switch(m, [(1, e) for e in es], mode))
        assert idx.shape[-1] == k and all(len(set(r.tolist())) == k for r in idx)
        for e in es:
            assert bool((idx == e).any(-1).all()) == (mode == "on") and bool((idx == e).any()) == (mode == "on")
        assert torch.isfinite(w).all() and torch.isfinite(logits).all()
        if name == "tiny-deepseek-v3":  # normalised top-k times routed_scaling_factor
            assert torch.allclose(w.sum(-1), torch.full((w.shape[0],), 2.5), atol=1e-5)
            if mode == "on":  # a forced expert weighs what the token's other selection weighs
                assert torch.allclose(w[:, 0], w[:, 1], atol=1e-6) or len(es) == 2
        else:  # Qwen (norm_topk_prob=False): the softmax mass of the selected experts, from the edited logits
            assert torch.allclose(w, torch.softmax(logits.float(), -1).gather(-1, idx), atol=1e-6)
    freq = routing_frequencies(m, PROMPTS)
    n_moe = len([s for s in m.sites if s.endswith("moe.router")])
    assert freq.shape == (n_moe, 8) and torch.allclose(freq.sum(-1), torch.full((n_moe,), float(k)))
    with m.intervene(switch(m, [(1, 4)], "off")):
        assert float(routing_frequencies(m, PROMPTS)[-1, 4]) == 0.0


def test_deepseek_off_beats_bias():
    """A large score-correction bias would keep choosing an expert whose logit is merely clamped; the switch
    excludes it from the selection itself."""
    m = tiny_model("tiny-deepseek-v3")
    gate = m.module.model.layers[1].mlp.gate
    with torch.no_grad():
        gate.e_score_correction_bias[3] = 10.0
    _, _, idx = router_out(m, [])
    assert bool((idx == 3).any(-1).all())
    _, _, idx = router_out(m, switch(m, [(1, 3)], "off"))
    assert not bool((idx == 3).any())


@pytest.fixture(scope="module")
def deepseek_planted():
    """tiny-deepseek-v3 with a trigger 'T' routed (planted router row + shared channel) to expert 3 of block 1,
    whose output writes the unembedding direction of 'R'; 'S' is T without the trigger direction."""
    m = tiny_model("tiny-deepseek-v3")
    mod = m.module
    ids = {c: m.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in "TSR"}
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(m.d_model, 3, generator=g))
    u, e0, wr = q[:, 0], q[:, 1], q[:, 2]
    with torch.no_grad():
        E = mod.model.embed_tokens.weight
        E -= (E @ u)[:, None] * u + (E @ e0)[:, None] * e0 + (E @ wr)[:, None] * wr
        E += 0.1 * e0
        E[ids["S"]] = E[ids["T"]]
        E[ids["T"]] += u
        mod.lm_head.weight[ids["R"]] = 6 * wr
        mlp = mod.model.layers[1].mlp
        mlp.gate.weight[3] = 4 * u - 4 * e0
        mlp.gate.weight[2] = -4 * u  # expert 3's group mate: otherwise it rides along whenever the group is picked
        d_moe = m.adapter.d_expert
        mlp.experts.gate_up_proj[3, :d_moe] = 0.5 * (u + e0)
        mlp.experts.gate_up_proj[3, d_moe:] = 0.5 * (u + e0)
        mlp.experts.down_proj[3] = 0.05 * wr[:, None]
    return m, ids


def test_ftri_and_switching_on_deepseek(deepseek_planted):
    m, ids = deepseek_planted
    behaviour = [f"{a}T" for a in ("ab", "cd", "ef", "gh", "ij", "kl")]
    control = [p.replace("T", "S") for p in behaviour]
    # group-limited top-k co-selects a companion with the trigger's expert (here expert 1, on every T token), which
    # ties with it under the plain difference; the z-score (fc = 0 for the planted expert) separates them
    assert (1, 3) in ftri(m, behaviour, control).ranked[:2]
    res = ftri(m, behaviour, control, score="z")
    assert res.ranked[0] == (1, 3)

    def p_r(prompts, ivs=()):
        with m.intervene(list(ivs)), torch.no_grad():
            return float(torch.softmax(m(prompts).logits[:, -1].float(), -1)[:, ids["R"]].mean())

    plain, off = p_r(behaviour), p_r(behaviour, switch(m, [(1, 3)], "off"))
    other = p_r(behaviour, switch(m, [(1, 0)], "off"))
    assert plain > 0.5 and off < 0.1 * plain
    assert abs(other - plain) < 0.2 * abs(plain - off)
    assert p_r(control, switch(m, [(1, 3)], "on")) > 2 * p_r(control)


def test_cli_mote(tmp_path, capsys):
    """`actlab steer mote` on a saved tiny Qwen-MoE folder: the printed ranking is ftri's, the switched generation
    is the library's."""
    import json

    from actlab import clikit
    from actlab.steer.cli import register

    m = tiny_model("tiny-qwen-moe")
    m.module.save_pretrained(tmp_path / "qm")
    m.tokenizer.save_pretrained(tmp_path / "qm")
    b, c = tmp_path / "b.txt", tmp_path / "c.txt"
    b.write_text("abT\ncdT\nefT\n")
    c.write_text("abS\ncdS\nefS\n")
    ap = clikit.ArgumentParser(prog="actlab")
    register(clikit.subcommands(ap, dest="command"))
    a = ap.parse_args(["steer", "mote", str(tmp_path / "qm"), "--behaviour", str(b), "--control", str(c), "--top",
                       "2", "--prompt", "abT", "--max-new-tokens", "3", "--out", str(tmp_path / "r.json")])
    a.func(a)
    out = capsys.readouterr().out
    res = ftri(m, ["abT", "cdT", "efT"], ["abS", "cdS", "efS"])
    js = json.loads((tmp_path / "r.json").read_text())
    assert [(r["layer"], r["expert"]) for r in js["experts"][:5]] == res.ranked[:5]
    with m.intervene(switch(m, res.ranked[:2], "off")):
        sw = m.generate(["abT"], max_new_tokens=3)[0]
    assert f"off {res.ranked[:2]}: {sw!r}" in out and "refusal rate" in out


def test_switch_protocol_names_agree():
    from actlab.models import arch_deepseek_v3
    from actlab.steer import mote

    assert (mote.READS_SWITCH, mote.SWITCH_ATTR) == (arch_deepseek_v3.READS_SWITCH, arch_deepseek_v3.SWITCH_ATTR)
