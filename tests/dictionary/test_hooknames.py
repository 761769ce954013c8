"""Peer hook names map to actlab sites and back (TransformerLens / SAELens, sparsify module paths)."""
import pytest

from actlab.dictionary.hooknames import to_site, to_sparsify, to_transformerlens


@pytest.mark.parametrize("hook,site", [
    ("blocks.8.hook_resid_pre", "blocks.8.resid_pre"), ("blocks.8.hook_resid_mid", "blocks.8.resid_mid"),
    ("blocks.8.hook_resid_post", "blocks.8.resid_post"), ("blocks.8.hook_mlp_out", "blocks.8.mlp_out"),
    ("blocks.8.hook_attn_out", "blocks.8.attn_out"), ("blocks.8.attn.hook_z", "blocks.8.attn.z"),
    ("blocks.8.attn.hook_q", "blocks.8.attn.q"), ("blocks.8.mlp.hook_post", "blocks.8.mlp_act"),
    ("blocks.8.ln2.hook_normalized", "blocks.8.mlp_in"), ("blocks.8.hook_mlp_in", "blocks.8.resid_mid"),
    ("hook_embed", "embed"), ("ln_final.hook_normalized", "final_norm"),
    ("layers.8", "blocks.8.resid_post"), ("model.layers.8", "blocks.8.resid_post"), ("h.3", "blocks.3.resid_post"),
    ("transformer.h.3.mlp", "blocks.3.mlp_out"), ("layers.8.mlp", "blocks.8.mlp_out"),
    ("layers.8.self_attn", "blocks.8.attn_out"), ("gpt_neox.layers.2.attention", "blocks.2.attn_out"),
    ("blocks.8.resid_post", "blocks.8.resid_post"), ("blocks.8.hook_unknown", ""), ("sae", ""), ("", "")])
def test_to_site(hook, site):
    assert to_site(hook) == site


def test_transcoder_hookpoints_read_the_module_input():
    assert to_site("layers.8.mlp", transcoder_input=True) == "blocks.8.mlp_in"
    assert to_site("layers.8", transcoder_input=True) == "blocks.8.resid_pre"
    assert to_site("layers.8.self_attn", transcoder_input=True) == ""     # attention's input is post-LN


@pytest.mark.parametrize("site", ["blocks.2.resid_pre", "blocks.2.resid_mid", "blocks.2.resid_post",
                                  "blocks.2.mlp_out", "blocks.2.attn_out", "blocks.2.attn.z", "blocks.2.mlp_act",
                                  "blocks.2.mlp_in", "embed", "final_norm"])
def test_round_trips(site):
    assert to_site(to_transformerlens(site)) == site
    assert to_transformerlens(site) != site
    assert to_site(to_sparsify(site)) == site


def test_sparsify_names():
    assert to_sparsify("blocks.4.resid_post") == "layers.4"
    assert to_sparsify("blocks.4.mlp_out") == "layers.4.mlp"
    assert to_sparsify("blocks.4.mlp_in", "blocks.4.mlp_out") == "layers.4.mlp"
    assert to_sparsify("blocks.4.attn.z") == "blocks.4.attn.z"
