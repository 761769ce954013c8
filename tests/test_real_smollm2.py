"""The real default model: load (cached after the first time), record, intervene, generate."""
import pytest
import torch

from actlab import Add

pytestmark = pytest.mark.real


def test_smollm2_load_record_generate(smollm2):
    m = smollm2
    assert m.family == "llama" and m.n_layers == 30 and m.d_model == 576
    assert m.revision.startswith("gguf-")
    enc = m.tokenize(["The capital of France is", "Water boils at"])
    sites = ["blocks.0.resid_post", "blocks.14.resid_post", "blocks.14.attn.z", "blocks.14.mlp_act"]
    acts = m.record(enc, sites=sites, stop_early=False)
    with torch.no_grad():
        hs = m.module(**m.forward_kwargs(enc), output_hidden_states=True).hidden_states  # position ids from the mask
    assert torch.equal(acts["blocks.14.resid_post"], hs[15])
    assert acts["blocks.14.attn.z"].shape[2:] == (9, 64) and acts["blocks.14.mlp_act"].shape[-1] == 1536
    out = m.generate("The capital of France is", max_new_tokens=6)
    assert "Paris" in out
    v = acts["blocks.14.resid_post"][:, -1].mean(0)
    with m.intervene({"blocks.14.resid_post": Add(v, alpha=0.0)}):
        same = m.generate("The capital of France is", max_new_tokens=6)
    assert same == out
