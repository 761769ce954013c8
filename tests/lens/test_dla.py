"""Direct logit attribution: components sum to the model's logit difference (1e-4) on every tiny causal
architecture with random biases and norm gains; batched == one at a time; dictionaries split a component exactly;
BERT refuses (no unembedding)."""
from pathlib import Path

import pytest
import torch

from actlab import load_model
from actlab.dictionary import DictConfig, build
from actlab.lens import direct_logit_attribution, frozen_norm
from actlab.models import Unsupported

from .conftest import CAUSAL, TEXTS

TARGET, CONTRAST = 70, 71   # two byte tokens


@pytest.mark.parametrize("name", CAUSAL)
def test_components_sum_to_the_logit_difference(biased, name):
    m = biased(name)
    r = direct_logit_attribution(m, TEXTS, TARGET, CONTRAST)
    assert r.logit.abs().max() > 0.05          # a logit difference worth splitting
    torch.testing.assert_close(r.total, r.logit, atol=1e-4, rtol=0)
    assert r.resid_error.max() < 1e-4          # the components rebuild the final residual
    L, H = m.n_layers, m.adapter.n_heads
    for i in range(L):
        assert sum(lab.startswith(f"blocks.{i}.attn.z#") for lab in r.labels) == H
        assert f"blocks.{i}.mlp_out" in r.labels
    assert ("pos_embed" in r.labels) == (name == "tiny-gpt2")
    assert ("final_norm.bias" in r.labels) == (name in ("tiny-gpt2", "tiny-neox"))
    # a single logit (no contrast) and a middle position split exactly too
    r1 = direct_logit_attribution(m, TEXTS, TARGET, position=1)
    torch.testing.assert_close(r1.total, r1.logit, atol=1e-4, rtol=0)
    # heads=False keeps each attention layer whole: the same total, per-layer sums equal the head sums
    r2 = direct_logit_attribution(m, TEXTS, TARGET, CONTRAST, heads=False)
    torch.testing.assert_close(r2.total, r.logit, atol=1e-4, rtol=0)
    for i in range(L):
        heads = sum(v for lab, v in r.by_layer(1).items() if lab == f"blocks.{i}.attn")
        whole = r2.values[1, r2.labels.index(f"blocks.{i}.attn_out")]
        assert abs(heads - float(whole)) < 1e-4


@pytest.mark.parametrize("name", CAUSAL)
def test_batched_equals_one_at_a_time(biased, name):
    m = biased(name)
    tg, ct = [70, 80, 90], [71, 81, 91]
    batch = direct_logit_attribution(m, TEXTS, tg, ct)
    for i, t in enumerate(TEXTS):
        one = direct_logit_attribution(m, t, tg[i], ct[i])
        assert one.labels == batch.labels
        torch.testing.assert_close(batch.values[i], one.values[0], atol=1e-4, rtol=1e-4)


def test_unembedding_bias_is_a_component():
    """A read-out with a bias (none of the tiny models has one): b_U[target] - b_U[contrast] is its own term."""
    from ..conftest import randomize

    m = randomize(load_model("tiny-gpt2"))
    head = m.adapter.unembed
    head.bias = torch.nn.Parameter(torch.randn(head.out_features, generator=torch.Generator().manual_seed(3)))
    r = direct_logit_attribution(m, TEXTS, TARGET, CONTRAST)
    torch.testing.assert_close(r.total, r.logit, atol=1e-4, rtol=0)
    b = r.values[:, r.labels.index("unembed.bias")]
    torch.testing.assert_close(b, (head.bias[TARGET] - head.bias[CONTRAST]).detach().expand(3))


def test_component_contribution_is_its_direct_effect(biased):
    """Removing one head's write from the final residual (scale frozen) moves the logit by its contribution: checked
    against the model's own read-out on the edited residual, linearised at the clean scale."""
    m = biased("tiny-gpt2")
    r = direct_logit_attribution(m, TEXTS[:1], TARGET, CONTRAST)
    L = m.n_layers
    acts = m.record(TEXTS[:1], [f"blocks.{L - 1}.resid_post", f"blocks.{L - 1}.attn.z"], positions=-1)
    x = acts[f"blocks.{L - 1}.resid_post"]
    head = acts[f"blocks.{L - 1}.attn.z"][:, 2] @ m.adapter.W_O(L - 1)[2]
    fn = frozen_norm(m, x)
    u = m.adapter.W_U[:, TARGET] - m.adapter.W_U[:, CONTRAST]
    # the edited residual read out at the clean scale: centre(x - head) * gain + bias
    edited = ((fn.centre(x - head) * fn.gain + fn.bias) @ u).item()
    clean = ((fn.centre(x) * fn.gain + fn.bias) @ u).item()
    assert abs((clean - edited) - float(r.values[0, r.labels.index(f"blocks.{L - 1}.attn.z#2")])) < 1e-4


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_dictionaries_split_exactly(biased, name):
    m = biased(name)
    d, dz = m.d_model, m.adapter.n_heads * m.adapter.d_head
    g = torch.Generator().manual_seed(0)

    def sae(d_in, site, **kw):
        s = build(DictConfig(arch="relu", d_in=d_in, d_sae=32, site=site, **kw))
        with torch.no_grad():
            s.b_enc.normal_(0, 0.1, generator=g)
            s.b_dec.normal_(0, 0.1, generator=g)
        return s

    dicts = {"blocks.0.attn.z": sae(dz, "blocks.0.attn.z"), "blocks.1.attn_out": sae(d, "blocks.1.attn_out"),
             "blocks.0.mlp_out": sae(d, "blocks.0.mlp_out"),
             "blocks.1.mlp_out": sae(d, "blocks.1.mlp_in", d_out=d, site_out="blocks.1.mlp_out", skip=True)}
    with torch.no_grad():
        dicts["blocks.1.mlp_out"].W_skip.normal_(0, 0.1, generator=g)
    r = direct_logit_attribution(m, TEXTS, TARGET, CONTRAST, dictionaries=dicts)
    torch.testing.assert_close(r.total, r.logit, atol=1e-4, rtol=0)
    assert r.resid_error.max() < 1e-4
    for s in dicts:
        assert f"{s}:f31" in r.labels and f"{s}:error" in r.labels and f"{s}:b_dec" in r.labels
    assert "blocks.1.mlp_out:skip" in r.labels and not any(lab.startswith("blocks.0.attn.z#") for lab in r.labels)
    # latents are a split of the dictionary's reconstruction: inactive latents contribute exactly 0
    acts = m.record(TEXTS, "blocks.0.mlp_out", positions=-1)["blocks.0.mlp_out"]
    z = dicts["blocks.0.mlp_out"].encode(acts)
    feats = torch.stack([r.values[:, r.labels.index(f"blocks.0.mlp_out:f{j}")] for j in range(32)], -1)
    assert torch.equal(feats == 0, z == 0)


def test_errors(biased):
    m = biased("tiny-gpt2")
    with pytest.raises(Unsupported, match="bert: no unembedding"):
        direct_logit_attribution(load_model("tiny-bert"), TEXTS, TARGET)
    with pytest.raises(ValueError, match="3 token ids given for a batch of 2"):
        direct_logit_attribution(m, TEXTS[:2], [1, 2, 3])
    with pytest.raises(ValueError, match="out of range"):
        direct_logit_attribution(m, TEXTS, 10**6)
    with pytest.raises(ValueError, match="is 2 tokens"):
        direct_logit_attribution(m, TEXTS, "ab")
    with pytest.raises(ValueError, match="dictionary site 'blocks.0.resid_post'"):
        direct_logit_attribution(m, TEXTS, TARGET, dictionaries={
            "blocks.0.resid_post": build(DictConfig(arch="relu", d_in=64, d_sae=8))})


def test_plot(biased, tmp_path):
    r = direct_logit_attribution(biased("tiny-llama"), TEXTS, TARGET, CONTRAST)
    p = r.plot(str(tmp_path / "dla.png"), k=5)
    assert Path(p).read_bytes()[:4] == b"\x89PNG"
    assert len(r.top(5)) == 5 and abs(r.top(1)[0][1]) == r.values[0].abs().max().item()
