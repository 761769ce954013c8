"""Architecture adapters: every site records on every tiny architecture, and each weight accessor reproduces the
module's own forward (q/k/v, z -> attn_out, mlp_in -> mlp_act -> mlp_out, embed, final_norm -> logits)."""
import pytest
import torch

from actlab import load_model, wrap
from actlab.models import Adapter, Unsupported

ARCHS = ["tiny-gpt2", "tiny-llama", "tiny-bert", "tiny-mixtral", "tiny-neox"]
NAMES = {"tiny-gpt2": "gpt2", "tiny-llama": "llama", "tiny-bert": "bert", "tiny-mixtral": "mixtral",
         "tiny-neox": "gpt_neox"}
TEXTS = ["hello world, this is a test", "short one"]
# the module whose output the attention projections read (None: BERT is post-LN, attention reads resid_pre)
ATTN_IN = {"gpt2": "transformer.h.{i}.ln_1", "llama": "model.layers.{i}.input_layernorm", "bert": None,
           "mixtral": "model.layers.{i}.input_layernorm", "gpt_neox": "gpt_neox.layers.{i}.input_layernorm"}


def random_biases(m):
    """Every bias random: HF initialises biases to 0, which would hide a dropped or misplaced bias."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in m.module.named_parameters():
            if n.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return m


@pytest.fixture(scope="module")
def biased():
    cache = {}
    return lambda name: cache[name] if name in cache else cache.setdefault(name, random_biases(load_model(name)))


def close(a, b, **kw):
    torch.testing.assert_close(a, b, rtol=kw.get("rtol", 1e-4), atol=kw.get("atol", 1e-5))


def act_fn(m, i):
    blk = m.adapter.block(i)
    return {"gpt2": lambda: blk.mlp.act, "llama": lambda: blk.mlp.act_fn, "bert": lambda: blk.intermediate.intermediate_act_fn,
            "gpt_neox": lambda: blk.mlp.act, "mixtral": lambda: blk.mlp.experts.act_fn}[m.family]()


@pytest.mark.parametrize("name", ARCHS)
def test_every_site_records_and_family_is_adapter_name(tiny, name):
    m = tiny(name)
    assert isinstance(m.adapter, Adapter) and m.family == m.adapter.name == NAMES[name]
    assert m.n_layers == 2 and m.d_model == 64 and m.adapter.d_head == 16
    enc = m.tokenize(TEXTS)
    b, p = enc["input_ids"].shape
    acts = m.record(enc, sites=m.sites)
    assert set(acts) == set(m.sites)
    kinds = {s.split(".", 2)[-1] for s in m.sites if s.startswith("blocks.")}
    assert m.sites[0] == "embed" and (m.sites[-2:] == ["final_norm", "logits"]) == (name != "tiny-bert")
    assert m.is_causal_lm == m.adapter.is_causal_lm == (name != "tiny-bert")
    for kind in ("resid_pre", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z", "attn_out", "mlp_in", "mlp_out",
                 "resid_post"):
        assert kind in kinds, (name, kind)
    for s, t in acts.items():
        assert t.shape[:2] == (b, p), s
        if s.endswith(("attn.q", "attn.z")):
            assert t.shape[2:] == (m.adapter.n_heads, m.adapter.d_head), s
        if s.endswith(("attn.k", "attn.v")):
            assert t.shape[2:] == (m.adapter.n_kv_heads, m.adapter.d_head), s


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("i", [0, 1])
def test_accessors_match_the_modules_forward(biased, name, i):
    m = biased(name)
    ad = m.adapter
    enc = m.tokenize(TEXTS)
    pre = f"blocks.{i}."
    sites = [pre + k for k in ("resid_pre", "attn.q", "attn.k", "attn.v", "attn.z", "attn_out", "mlp_in", "mlp_out")]
    sites += [pre + "mlp_act"] if pre + "mlp_act" in m.sites else []
    sites += ["embed"] + [s for s in ("final_norm", "logits") if s in m.sites]
    ln = ATTN_IN[m.family]
    if ln is not None:
        sites.append(f"module:{ln.format(i=i)}")
    a = m.record(enc, sites=sites)
    x = a[f"module:{ln.format(i=i)}"] if ln is not None else a[pre + "resid_pre"]
    for kind, W, b in (("q", ad.W_Q, ad.b_Q), ("k", ad.W_K, ad.b_K), ("v", ad.W_V, ad.b_V)):
        got = torch.einsum("bpd,hde->bphe", x, W(i))
        if b(i) is not None:
            got = got + b(i)
        close(got, a[pre + "attn." + kind])
    out = torch.einsum("bphe,hed->bpd", a[pre + "attn.z"], ad.W_O(i))
    close(out + (ad.b_O(i) if ad.b_O(i) is not None else 0), a[pre + "attn_out"])
    xin = a[pre + "mlp_in"]
    if m.family == "mixtral":
        _check_experts(m, i, xin, a[pre + "mlp_out"])
    else:
        h = xin @ ad.W_in(i) + (ad.b_in(i) if ad.b_in(i) is not None else 0)
        h = act_fn(m, i)(xin @ ad.W_gate(i)) * h if m.family == "llama" else act_fn(m, i)(h)
        close(h, a[pre + "mlp_act"])
        close(a[pre + "mlp_act"] @ ad.W_out(i) + (ad.b_out(i) if ad.b_out(i) is not None else 0), a[pre + "mlp_out"])
    ids = enc["input_ids"]
    if m.family == "bert":
        emb = ad.embed_module
        raw = ad.W_E[ids] + ad.W_pos[torch.arange(ids.shape[1])] + emb.token_type_embeddings.weight[0]
        close(a["embed"], emb.LayerNorm(raw))
        with pytest.raises(Unsupported, match="bert"):
            ad.W_U
    else:
        assert torch.equal(a["embed"], ad.W_E[ids])
        logits = a["final_norm"] @ ad.W_U
        close(logits + (ad.b_U if ad.b_U is not None else 0), a["logits"])
    if m.family == "gpt2" and i == 0:  # learned positions; row 0 is the longest text (no padding)
        close(a["blocks.0.resid_pre"][0], ad.W_E[ids[0]] + ad.W_pos[torch.arange(ids.shape[1])])


def _check_experts(m, i, xin, mlp_out):
    """Mixtral: router logits = mlp_in @ W_router; mlp_out = sum over the top-k experts of w * expert(x)."""
    ad = m.adapter
    with pytest.raises(Unsupported, match="mixtral.*W_in_expert"):
        ad.W_in(i)
    with pytest.raises(Unsupported, match="experts"):
        ad.W_out(i)
    x = xin.reshape(-1, xin.shape[-1])
    probs = (x @ ad.W_router(i)).softmax(-1)
    top_v, top_i = probs.topk(m.config.num_experts_per_tok, dim=-1)
    top_v = top_v / top_v.sum(-1, keepdim=True)
    act = act_fn(m, i)
    want = torch.zeros_like(x)
    for e in range(ad.n_experts):
        y = (act(x @ ad.W_gate_expert(i, e)) * (x @ ad.W_in_expert(i, e))) @ ad.W_out_expert(i, e)
        w = (top_v * (top_i == e)).sum(-1, keepdim=True)
        want = want + w * y
    close(want.view_as(mlp_out), mlp_out)


@pytest.mark.parametrize("name", ARCHS)
def test_edits_through_views_change_the_module(name):
    """A write-through view: editing one head of W_Q moves attn.q by x @ delta on that head only; zeroing W_out
    leaves mlp_out = b_out (an MoE: zeroing every expert's W_out leaves 0)."""
    m = random_biases(load_model(name))  # a private copy: the edits stay here
    ad = m.adapter
    enc = m.tokenize(TEXTS)
    ln = ATTN_IN[m.family]
    x_site = f"module:{ln.format(i=1)}" if ln else "blocks.1.resid_pre"
    base = m.record(enc, sites=["blocks.1.attn.q", x_site])
    delta = torch.randn(m.d_model, ad.d_head)
    with torch.no_grad():
        ad.W_Q(1)[2] += delta
    q = m.record(enc, sites=["blocks.1.attn.q"])["blocks.1.attn.q"]
    close(q[:, :, 2] - base["blocks.1.attn.q"][:, :, 2], base[x_site] @ delta)
    keep = [h for h in range(ad.n_heads) if h != 2]
    assert torch.equal(q[:, :, keep], base["blocks.1.attn.q"][:, :, keep])
    with torch.no_grad():
        if m.family == "mixtral":
            for e in range(ad.n_experts):
                ad.W_out_expert(1, e).zero_()
            bias = torch.zeros(m.d_model)
        else:
            ad.W_out(1).zero_()
            bias = ad.b_out(1) if ad.b_out(1) is not None else torch.zeros(m.d_model)
    out = m.record(enc, sites=["blocks.1.mlp_out"])["blocks.1.mlp_out"]
    assert torch.equal(out, bias.expand_as(out))


@pytest.mark.parametrize("name", ARCHS)
def test_residual_writers_are_views_with_d_model_last(tiny, name):
    m = tiny(name)
    writers = m.adapter.residual_writers()
    params = [p for p in m.module.parameters()]
    labels = [w[0] for w in writers]
    assert len(set(labels)) == len(labels) and labels[0] == "embed"
    for label, w, b in writers:
        assert w.shape[-1] == m.d_model, label
        assert any(w.untyped_storage().data_ptr() == p.untyped_storage().data_ptr() for p in params), label
        assert b is None or b.shape == (m.d_model,), label
    n_mlp = 2 * m.config.num_local_experts if name == "tiny-mixtral" else 2
    assert sum("attn_out" in x for x in labels) == 2 and len(labels) - sum("attn_out" in x for x in labels) - \
        sum("embed" in x for x in labels) == n_mlp


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-mixtral", "tiny-neox"])
def test_orthogonalising_every_writer_removes_the_direction(name):
    """Pre-LN models: after W -= (W r) r^T (and b likewise) on every residual writer, no residual site has a
    component along r. Missing one writer (or one expert, or a bias) leaves a component."""
    m = random_biases(load_model(name))
    r = torch.randn(m.d_model)
    r = r / r.norm()
    with torch.no_grad():
        for _, w, b in m.adapter.residual_writers():
            w -= (w @ r)[..., None] * r
            if b is not None:
                b -= (b @ r) * r
    sites = [f"blocks.{i}.{k}" for i in range(m.n_layers) for k in ("resid_pre", "resid_post")]
    acts = m.record(m.tokenize(TEXTS), sites=sites)
    for s in sites:
        assert float((acts[s] @ r).abs().max()) < 1e-4, s


def test_unsupported_names_architecture_and_reason():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4))
    m = wrap(net, name="mlp")
    assert m.family == "generic" and m.n_layers == 0 and m.d_model is None and m.sites == []
    with pytest.raises(Unsupported, match="generic: W_Q"):
        m.adapter.W_Q(0)
    assert issubclass(Unsupported, ValueError)


def test_post_norm_and_experts_per_token():
    """BERT is the post-norm architecture; only the MoE model answers experts_per_token, with its config's k."""
    for name in ("tiny-gpt2", "tiny-llama", "tiny-mixtral", "tiny-neox", "tiny-bert"):
        ad = load_model(name).adapter
        assert ad.post_norm == (name == "tiny-bert")
        if name == "tiny-mixtral":
            assert ad.experts_per_token == ad.config.num_experts_per_tok == 2
        else:
            with pytest.raises(Unsupported, match=f"{ad.name}: dense MLP"):
                ad.experts_per_token
