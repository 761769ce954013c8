"""Interventions inside training loops: identity edits leave losses and gradients bit-identical, grad="block" gives
exactly zero gradient upstream, clamps to another site's value in the same pass, step schedules."""
import copy

import pytest
import torch

from actlab import Model
from actlab.core.interventions import Add, Fn, FromSite, Replace, Scale, Schedule, Scheduled

TEXTS = ["the quick brown fox", "jumps over the lazy dog!"]


def fresh(tiny, name="tiny-gpt2"):
    """A private, trainable copy of a cached tiny model (dropout on, so RNG use must match too)."""
    m = tiny(name)
    mod = copy.deepcopy(m.module).train().requires_grad_(True)
    return Model(mod, m.tokenizer, name=name)


def train(m, enc, steps=4, ivs=None, grad="through", schedule=None, seed=0):
    """A plain training loop; returns (losses, gradients of the first step, final parameters)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(m.module.parameters(), lr=1e-2)
    losses, first = [], None
    for _ in range(steps):
        opt.zero_grad()
        if ivs is None:
            loss = m(enc, labels=enc["input_ids"]).loss
        else:
            with m.intervene(ivs, grad=grad, schedule=schedule):
                loss = m(enc, labels=enc["input_ids"]).loss
        loss.backward()
        if first is None:
            first = {n: p.grad.clone() for n, p in m.module.named_parameters() if p.grad is not None}
        opt.step()
        losses.append(loss.detach())
        if schedule is not None:
            schedule.advance()
    return torch.stack(losses), first, {n: p.detach().clone() for n, p in m.module.named_parameters()}


def identical(a, b):
    la, ga, pa = a
    lb, gb, pb = b
    assert torch.equal(la, lb)
    assert ga.keys() == gb.keys()
    assert all(torch.equal(ga[k], gb[k]) for k in ga)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


IDENTITIES = {
    "scale1": lambda: {"blocks.0.resid_post": Scale(factor=1.0)},
    "fn_same": lambda: {"blocks.1.resid_pre": Fn(fn=lambda a, c: a)},
    "fn_copy": lambda: {"blocks.0.attn_out": Fn(fn=lambda a, c: a.clone())},
    "add_zero_last": lambda: {"blocks.1.resid_mid": Add(torch.randn(64), alpha=0.0, positions="last")},
    "pattern_copy": lambda: {"blocks.0.attn.pattern": Fn(fn=lambda a, c: a * 1.0)},
    "z_where_positions": lambda: {"blocks.1.attn.z": Fn(fn=lambda a, c: a + 0.0, positions=slice(0, 3))},
    "from_site_self": lambda: {"blocks.1.resid_pre": FromSite(source="blocks.0.resid_post", fn=lambda s, a, c: s)},
}


@pytest.mark.parametrize("kind", sorted(IDENTITIES))
def test_identity_interventions_leave_training_bit_identical(tiny, kind, one_thread):
    enc = tiny("tiny-gpt2").tokenize(TEXTS)
    base = train(fresh(tiny), enc)
    run = train(fresh(tiny), enc, ivs=IDENTITIES[kind]())
    identical(base, run)
    assert not torch.equal(base[0][0], base[0][-1])  # it trained


def test_off_schedule_is_identity_and_window_applies_only_inside(tiny, one_thread):
    enc = tiny("tiny-gpt2").tokenize(TEXTS)
    base = train(fresh(tiny), enc, steps=5)
    never = Schedule(start=10, stop=20)
    identical(base, train(fresh(tiny), enc, steps=5, ivs={"blocks.0.resid_post": Scale(factor=3.0)}, schedule=never))
    assert never.step == 5
    # on for steps 2..3 only: losses equal before, differ from step 2 on (parameters diverge afterwards)
    win = Schedule(start=2, stop=4)
    losses = train(fresh(tiny), enc, steps=5, ivs={"blocks.0.resid_post": Scale(factor=3.0)}, schedule=win)[0]
    assert torch.equal(losses[:2], base[0][:2])
    assert not torch.equal(losses[2], base[0][2])
    # the wrapper form: one schedule per intervention, and a window seen from inside the forward pass
    sched = Schedule(start=1, stop=2)
    seen = []
    iv = Scheduled(inner=Fn(fn=lambda a, c: seen.append(sched.step) or a), schedule=sched)
    m = tiny("tiny-gpt2")
    with torch.no_grad(), m.intervene({"blocks.0.resid_post": iv}):
        for _ in range(3):
            m(enc)
            sched.advance()
    assert seen == [1]


def upstream_grads(m, enc, site, grad, positions="all"):
    m.module.zero_grad(set_to_none=True)
    with m.intervene({site: Fn(fn=lambda a, c: a, positions=positions)}, grad=grad):
        m(enc, labels=enc["input_ids"]).loss.backward()
    return {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in m.module.named_parameters()}


def test_block_gives_exactly_zero_gradient_upstream(tiny):
    m = fresh(tiny)
    m.module.eval()
    enc = m.tokenize(TEXTS)
    up = [n for n, _ in m.module.named_parameters() if ".h.0." in n or "wpe" in n]  # wte is tied to lm_head
    down = [n for n, _ in m.module.named_parameters() if ".h.1." in n]
    through = upstream_grads(m, enc, "blocks.1.resid_pre", "through")
    block = upstream_grads(m, enc, "blocks.1.resid_pre", "block")
    assert all(block[n].abs().max() == 0 for n in up)
    assert all(through[n].abs().max() > 0 for n in up if n.endswith("weight"))
    assert all(torch.equal(block[n], through[n]) for n in down)  # downstream sees the same values
    # blocking only the last position leaves upstream gradient from the other positions
    part = upstream_grads(m, enc, "blocks.1.resid_pre", "block", positions="last")
    assert part[up[0]].abs().max() > 0 and not torch.equal(part[up[0]], through[up[0]])


def test_from_site_clamps_to_another_sites_value_in_the_same_pass(tiny):
    m = tiny("tiny-gpt2")
    enc = m.tokenize(TEXTS)
    iv = FromSite(source="blocks.0.resid_pre", fn=lambda src, act, ctx: 2 * src)
    with m.intervene({"blocks.1.resid_pre": iv}), m.recording(["blocks.0.resid_pre", "blocks.1.resid_pre"]) as r:
        m(enc)
    torch.testing.assert_close(r["blocks.1.resid_pre"], 2 * r["blocks.0.resid_pre"], rtol=0, atol=0)
    # block: the clamped value is a constant (the source is detached too): no gradient reaches embeddings or block 0
    t = fresh(tiny)
    t.module.eval()
    with t.intervene({"blocks.1.resid_pre": iv}, grad="block"):
        t(enc, labels=enc["input_ids"]).loss.backward()
    assert t.module.transformer.wpe.weight.grad is None or t.module.transformer.wpe.weight.grad.abs().max() == 0
    t.module.zero_grad(set_to_none=True)
    with t.intervene({"blocks.1.resid_pre": iv}, grad="through"):
        t(enc, labels=enc["input_ids"]).loss.backward()
    assert t.module.transformer.wpe.weight.grad.abs().max() > 0


def test_bad_modes_and_sources_give_clear_errors(tiny):
    m = tiny("tiny-gpt2")
    with pytest.raises(ValueError, match="grad='detach'.*through.*block"):
        with m.intervene({"blocks.0.resid_post": Scale(factor=1.0)}, grad="detach"):
            pass
    with pytest.raises(KeyError, match="blocks.9.resid_pre"):
        with m.intervene({"blocks.0.resid_post": FromSite(source="blocks.9.resid_pre", fn=lambda s, a, c: s)}):
            pass
    late = FromSite(source="blocks.1.resid_post", fn=lambda s, a, c: s)
    with pytest.raises(RuntimeError, match="blocks.1.resid_post.*not reached earlier"):
        with torch.no_grad(), m.intervene({"blocks.0.resid_post": late}):
            m(m.tokenize(TEXTS))
    with pytest.raises(ValueError, match="start <= stop"):
        Schedule(start=5, stop=2)
    with pytest.raises(TypeError, match="Schedule"):
        Scheduled(inner=Replace(torch.zeros(64)), schedule=(1, 2))
