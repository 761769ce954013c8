"""The per-call fast paths change no result: a steering edit at every position computes no positions and equals a raw
torch hook, feature shapes come from a cheap sequence flag, record() installs and removes its hooks without
context-manager frames (also when the forward or the installation fails), and what it records is HF's own
hidden states."""
from __future__ import annotations

import copy

import pytest
import torch

import actlab
from actlab import Add


@pytest.mark.parametrize("alpha", [1.0, 2.5])
def test_steered_generate_reads_no_positions_and_equals_a_raw_hook(tiny, position_calls, alpha):
    m = tiny("tiny-llama")
    v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(0)) * 3
    site = "blocks.1.resid_post"
    layer = dict(m.module.named_modules())[m.sitemap.resolve(site).module]
    kw = dict(max_new_tokens=6, min_new_tokens=6, return_ids=True)

    def add(mod, args, out):
        return (out[0] + alpha * v, *out[1:]) if isinstance(out, tuple) else out + alpha * v
    handle = layer.register_forward_hook(add)
    try:
        ref = m.generate(["hello there, how are you", "hi"], **kw)
    finally:
        handle.remove()
    calls = position_calls
    with m.intervene({site: Add(v, alpha=alpha)}):
        got = m.generate(["hello there, how are you", "hi"], **kw)
    assert calls == []                          # positions 'all': no position bookkeeping at prefill or decode steps
    assert torch.equal(got, ref)                # bitwise the raw hook's tokens (left-padded batch)
    assert not torch.equal(got, m.generate(["hello there, how are you", "hi"], **kw))   # the edit did something
    with m.intervene({site: Add(v, alpha=alpha, positions="last")}):
        m.generate(["hello there, how are you", "hi"], **kw)
    assert len(calls) == 6                      # a selector still reads positions: once per forward call


def test_add_on_a_model_without_token_sequences():
    """A wrapped MLP sees [batch, d]: the vector matches the per-row shape (act.shape[1:]), as ctx.info says."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    m = actlab.wrap(net)
    x = torch.randn(4, 5)
    v = torch.randn(8)
    seen = []
    with m.hooks({"module:0": lambda a, ctx: seen.append((ctx.sequence, ctx.info is not None))}):
        m(x)
    assert seen == [(False, False)]
    with m.intervene({"module:0": Add(v, alpha=2.0)}):
        got = m(x)
    ref = net[2](net[1](net[0](x) + 2.0 * v))
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_ctx_sequence_agrees_with_info_for_token_inputs(tiny):
    m = tiny("tiny-gpt2")
    seen = []
    with m.hooks({"blocks.0.resid_post": lambda a, ctx: seen.append((ctx.sequence, ctx.info is not None))}):
        m.generate("hello", max_new_tokens=2, min_new_tokens=2)
    assert seen == [(True, True)] * 2


def test_record_removes_its_hooks_when_the_forward_fails(tiny, n_hooks):
    m = tiny("tiny-gpt2")
    n = n_hooks(m.module)
    vocab = m.module.get_input_embeddings().weight.shape[0]
    bad = {"input_ids": torch.tensor([[1, vocab + 5]]), "attention_mask": torch.ones(1, 2, dtype=torch.long)}
    with pytest.raises(IndexError):
        m.record(bad, ["blocks.0.resid_post", "blocks.1.resid_post"], positions="last")
    assert n_hooks(m.module) == n and m._engine._root_users == 0 and m._engine._root_handle is None
    got = m.record({"input_ids": torch.tensor([[1, 2]])}, ["blocks.1.resid_post"])   # still works afterwards
    assert got["blocks.1.resid_post"].shape[:2] == (1, 2)


def test_install_undoes_a_partial_installation(tiny, n_hooks):
    m = tiny("tiny-gpt2")
    n = n_hooks(m.module)
    pairs = [("blocks.0.resid_post", lambda a, c: None), ("blocks.1.attn.q", lambda a, c: None),
             ("module:no.such.module", lambda a, c: None)]
    with pytest.raises(KeyError, match="no.such.module"):
        m._engine.install(pairs)
    assert n_hooks(m.module) == n and m._engine._root_users == 0
    with pytest.raises(KeyError, match="no.such.module"):
        with m.hooks(pairs):
            pass
    assert n_hooks(m.module) == n and m._engine._root_users == 0


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_recorded_resid_post_is_hf_hidden_states(tiny, name):
    """Every block's recorded output equals HF's ``output_hidden_states`` (on a copy: HF keeps capture hooks)."""
    m = tiny(name)
    enc = m.tokenize(["hello there, how are you", "hi"])
    sites = [f"blocks.{i}.resid_post" for i in range(m.n_layers)]
    got = m.record(enc, sites, stop_early=False)
    hf = copy.deepcopy(m.module)
    with torch.no_grad():
        hs = hf(**m.forward_kwargs(enc), use_cache=False, output_hidden_states=True).hidden_states
    for i, s in enumerate(sites[:-1]):        # HF's last entry is after the final norm
        assert torch.equal(got[s], hs[i + 1]), s
    norm = dict(hf.named_modules())[m.sitemap.resolve("final_norm").module]
    assert torch.equal(norm(got[sites[-1]]), hs[-1])
