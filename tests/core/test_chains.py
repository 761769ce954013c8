"""Site handlers run from a per-module chain set as the module's ``forward`` while installed: it must leave the
module as it found it, keep the forward's signature visible, compose with an instance-level forward set by someone
else, and survive ``copy.deepcopy`` (a copy never calls back into the original)."""
from __future__ import annotations

import copy
import inspect

import torch

TEXTS = ["hello there", "a longer prompt here"]


def test_forward_restored_and_instance_forward_kept(tiny, n_hooks):
    m = copy.deepcopy(tiny("tiny-gpt2"))
    blk = m.module.transformer.h[1]
    enc = m.tokenize(TEXTS)
    with torch.no_grad():
        ref = m(enc).logits
    calls = []
    own = blk.forward

    def theirs(*a, **k):   # an instance-level forward (accelerate's offload hooks set one)
        calls.append(1)
        return own(*a, **k)

    blk.forward = theirs
    n = n_hooks(m.module)
    with m.hooks({"blocks.1.resid_post": lambda a, c: a * 0}):
        with torch.no_grad():
            zeroed = m(enc).logits
    assert blk.__dict__["forward"] is theirs and n_hooks(m.module) == n and len(calls) == 1
    del blk.forward
    with torch.no_grad():
        assert torch.equal(m(enc).logits, ref) and not torch.allclose(zeroed, ref)
    assert "forward" not in blk.__dict__


def test_signature_seen_through_the_chain(tiny):
    m = tiny("tiny-llama")
    want = inspect.signature(m.module.forward)
    ids = m.tokenize(TEXTS)   # left padding: generate needs position ids from the mask
    plain = m.generate(TEXTS, 4, return_ids=True)
    with m.hooks({"module::in": lambda a, c: None, "blocks.0.resid_post": lambda a, c: None}):
        assert inspect.signature(m.module.forward) == want and "position_ids" in want.parameters
        hooked = m.generate(TEXTS, 4, return_ids=True)
    assert ids["attention_mask"].min() == 0 and torch.equal(hooked, plain)


def test_deepcopy_never_calls_back_into_the_original(tiny, n_hooks):
    m = copy.deepcopy(tiny("tiny-gpt2"))
    enc = m.tokenize(TEXTS)
    site = "blocks.0.resid_post"
    m.record(enc, [site])                     # the engine now holds a chain for block 0
    twin = copy.deepcopy(m)
    with torch.no_grad():
        twin.module.transformer.h[0].mlp.c_fc.bias.add_(1.0)   # the copy's weights differ from here on
    a, b = m.record(enc, [site])[site], twin.record(enc, [site])[site]
    assert not torch.allclose(a, b)           # each read its own module
    assert n_hooks(m.module) == 0 and n_hooks(twin.module) == 0

    seen = []
    with m.hooks({site: lambda act, c: seen.append(1)}):
        inner = copy.deepcopy(m)              # copied while a handler is installed
        with torch.no_grad():
            inner(enc)
        assert seen == []                     # the copy runs unhooked
        got = inner.record(enc, [site])[site]  # and its own engine can hook it
    torch.testing.assert_close(got, a)
    assert n_hooks(m.module) == 0 and seen == []


def test_hf_capture_hooks_see_the_edited_activation(tiny):
    """HF's output_hidden_states hooks are torch forward hooks: they run after the chain, so they report what the
    next layer receives."""
    from actlab import Add

    m = copy.deepcopy(tiny("tiny-gpt2"))
    enc = m.tokenize(TEXTS)
    v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = m(enc, output_hidden_states=True).hidden_states   # HF installs its capture hooks now, before ours
        with m.intervene({"blocks.0.resid_post": Add(v)}):
            hs = m(enc, output_hidden_states=True).hidden_states
    torch.testing.assert_close(hs[1], clean[1] + v)
    assert torch.equal(hs[0], clean[0]) and not torch.allclose(hs[2], clean[2])


def test_inner_block_leaves_the_outer_blocks_handlers(tiny, n_hooks):
    """One module, a pre handler (resid_pre: the block's input) from an outer block and a post handler (resid_post)
    from an inner one: leaving the inner block keeps the outer handler running."""
    m = tiny("tiny-gpt2")
    enc = m.tokenize(TEXTS)
    seen = []
    n = n_hooks(m.module)
    with torch.no_grad(), m.hooks({"blocks.0.resid_pre": lambda a, c: seen.append("pre")}):
        with m.hooks({"blocks.0.resid_post": lambda a, c: seen.append("post")}):
            m(enc)
        m(enc)
    m(enc)
    assert seen == ["pre", "post", "pre"] and n_hooks(m.module) == n
