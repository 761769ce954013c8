"""The attention-pattern site: equal to Hugging Face's eager attentions, invisible when only read, editable,
position-aware, and the model's attention implementation is restored afterwards."""
import pytest
import torch

from actlab import Fn, Scale, load_model

FAMILIES = ["tiny-gpt2", "tiny-llama", "tiny-bert", "tiny-mixtral", "tiny-neox"]
TEXTS = ["hello world, this is a test", "short one"]


def hf_kwargs(m, enc):
    """The inputs the Model itself passes (position ids that follow the attention mask, where it adds them)."""
    return m.forward_kwargs(enc) if hasattr(m, "forward_kwargs") else enc


def _hf_attentions(m, enc):
    """HF's own eager attention probabilities, [b, h, q, k] per layer."""
    old = m.config._attn_implementation
    m.module.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return m.module(**hf_kwargs(m, enc), output_attentions=True).attentions
    finally:
        m.module.set_attn_implementation(old)


@pytest.mark.parametrize("name", FAMILIES)
def test_pattern_equals_hf_and_reading_changes_nothing(name):
    m = load_model(name)  # a private copy: HF's output_attentions leaves its capture hooks on the module
    enc = m.tokenize(TEXTS)
    sites = [f"blocks.{i}.attn.pattern" for i in range(m.n_layers)]
    with torch.no_grad():
        plain = m(enc)[0]
    out, acts = m.run_with_cache(enc, sites)
    ref = _hf_attentions(m, enc)
    b, p = enc["input_ids"].shape
    for i, s in enumerate(sites):
        a = acts[s]
        assert a.shape == (b, p, m.config.num_attention_heads, p)  # [batch, query, head, key]
        torch.testing.assert_close(a.transpose(1, 2), ref[i], rtol=1e-5, atol=1e-6)
        real = enc["attention_mask"].bool()
        torch.testing.assert_close(a.sum(-1)[real], torch.ones_like(a.sum(-1)[real]))
        pad_keys = (~real)[:, None, None, :].expand_as(a) & real[:, :, None, None].expand_as(a)
        assert pad_keys.any() == (name != "tiny-bert" or not real.all())
        assert float(a[pad_keys].abs().sum()) < 1e-6  # real queries never attend to padding
    torch.testing.assert_close(out[0], plain, rtol=1e-5, atol=1e-5)
    assert m.config._attn_implementation == "eager"  # restored (tiny models run eager)


def test_causal_and_last_position(tiny):
    m = tiny("tiny-llama")
    enc = m.tokenize(["abcdef"])
    a = m.record(enc, ["blocks.0.attn.pattern"])["blocks.0.attn.pattern"][0]  # [q, h, k]
    future = torch.triu(torch.ones(a.shape[0], a.shape[2], dtype=torch.bool), 1)
    assert float(a.permute(1, 0, 2)[:, future].abs().max()) == 0.0
    last = m.record(enc, ["blocks.0.attn.pattern"], positions="last")["blocks.0.attn.pattern"]
    assert torch.equal(last[0], a[-1])


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_editing_the_pattern_reaches_the_output(tiny, name):
    """A zero pattern makes z zero, so the attention output is the output projection's bias (0 for Llama)."""
    m = tiny(name)
    enc = m.tokenize(TEXTS)
    with m.intervene({"blocks.1.attn.pattern": Scale(0.0)}):
        got = m.record(enc, ["blocks.1.attn.z", "blocks.1.attn_out"])
    assert float(got["blocks.1.attn.z"].abs().max()) == 0.0
    bias = m.module.transformer.h[1].attn.c_proj.bias if name == "tiny-gpt2" else torch.zeros(m.d_model)
    torch.testing.assert_close(got["blocks.1.attn_out"], bias.expand_as(got["blocks.1.attn_out"]))
    # attending only to the first real token copies its value everywhere: every query's z is the same
    def first_only(p, ctx):
        new = torch.zeros_like(p)
        first = (~ctx.info.valid_bp).sum(1)  # left padding: index of the first real token per row
        new[torch.arange(p.shape[0]), :, :, first] = 1.0
        return new
    if name == "tiny-llama":
        with m.intervene({"blocks.1.attn.pattern": Fn(first_only)}):
            z = m.record(enc, ["blocks.1.attn.z"])["blocks.1.attn.z"]
        real = enc["attention_mask"].bool()
        for r in range(z.shape[0]):
            zr = z[r][real[r]]
            torch.testing.assert_close(zr, zr[:1].expand_as(zr))


def test_pattern_in_generate_and_sdpa_restored(smollm2):
    m = smollm2
    assert m.config._attn_implementation == "sdpa"
    enc = m.tokenize(["The capital of France is", "Hi"])
    with torch.no_grad():
        plain = m(enc).logits
    with m.recording(["blocks.3.attn.pattern"]) as rec:
        with torch.no_grad():
            logits = m(enc).logits
    real = enc["attention_mask"].bool()  # (padding queries differ: fully masked rows are undefined)
    torch.testing.assert_close(logits[real], plain[real], rtol=1e-4, atol=1e-4)  # eager vs SDPA: same numbers
    a = rec["blocks.3.attn.pattern"]
    assert a.shape[2] == m.config.num_attention_heads  # GQA: one pattern per query head
    assert m.config._attn_implementation == "sdpa"
    with m.recording(["blocks.3.attn.pattern"]) as rec:
        m.generate(["Hi"], max_new_tokens=3)
    steps = rec.steps["blocks.3.attn.pattern"]
    assert [t.shape[-1] for t in steps] == [steps[0].shape[-1] + k for k in range(3)]  # keys grow with the cache
    with pytest.raises(ValueError, match="use rec.steps"):
        rec["blocks.3.attn.pattern"]
    assert m.config._attn_implementation == "sdpa"


def test_qkv_sites_rebuild_pattern_and_z(tiny, smollm2):
    """BERT (no rotary): softmax(q k^T / sqrt(d_head) + mask) is the pattern; every family: z = pattern @ v, with
    v's key-value heads shared by their query-head groups (GQA in SmolLM2)."""
    m = tiny("tiny-bert")
    enc = m.tokenize(TEXTS)
    a = m.record(enc, ["blocks.1.attn.q", "blocks.1.attn.k", "blocks.1.attn.v", "blocks.1.attn.pattern",
                       "blocks.1.attn.z"])
    q, k, v = a["blocks.1.attn.q"], a["blocks.1.attn.k"], a["blocks.1.attn.v"]  # [b, p, h, dh]
    scores = torch.einsum("bqhd,bkhd->bqhk", q, k) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~enc["attention_mask"].bool()[:, None, None, :], float("-inf"))
    torch.testing.assert_close(scores.softmax(-1), a["blocks.1.attn.pattern"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.einsum("bqhk,bkhd->bqhd", a["blocks.1.attn.pattern"], v), a["blocks.1.attn.z"],
                               rtol=1e-5, atol=1e-6)
    for model, layer in ((tiny("tiny-llama"), 1), (smollm2, 4)):
        enc = model.tokenize(TEXTS)
        real = enc["attention_mask"].bool()
        a = model.record(enc, [f"blocks.{layer}.attn.{x}" for x in ("q", "k", "v", "pattern", "z")])
        q, k, v = (a[f"blocks.{layer}.attn.{x}"] for x in ("q", "k", "v"))
        assert q.shape[2] == model.config.num_attention_heads and k.shape[2] == v.shape[2] == \
            model.config.num_key_value_heads
        v = v.repeat_interleave(q.shape[2] // v.shape[2], dim=2)
        z = torch.einsum("bqhk,bkhd->bqhd", a[f"blocks.{layer}.attn.pattern"], v)
        torch.testing.assert_close(z[real], a[f"blocks.{layer}.attn.z"][real], rtol=1e-4, atol=1e-5)
