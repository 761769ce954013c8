"""Peer formats held against the peers themselves.

Import direction: folders written by SAELens 6.x / sparsify (``fixtures/``, made by ``fixtures/make_fixtures.py``
in the peers' venv) load into actlab with the peer's own activations and outputs. Export direction: actlab's
export of the same SAE writes the cfg.json SAELens writes, field by field; and where ``sae_lens`` / ``sparsify``
import, the peers' own loaders read actlab's exports (skipped otherwise; ``fixtures/PEER_CHECK.txt`` holds the
last run of those tests in the peers' venv).
"""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from actlab.dictionary import DictConfig, build, load
from actlab.dictionary.formats import export_saelens, export_sparsify

FIX = Path(__file__).parent / "fixtures"
SAELENS = sorted(p.name for p in (FIX / "saelens").iterdir())
SITES = {"standard": ("blocks.1.resid_pre", ""), "standard_nocentre": ("blocks.1.mlp_out", ""),
         "standard_constnorm": ("blocks.0.resid_post", ""), "standard_layernorm": ("blocks.0.resid_post", ""),
         "topk": ("blocks.1.resid_post", ""), "jumprelu": ("blocks.0.attn.z", ""),
         "gated": ("blocks.1.resid_mid", ""), "gated_nocentre": ("blocks.1.resid_mid", ""),
         "transcoder": ("blocks.0.mlp_in", "blocks.0.mlp_out"),
         "skip_transcoder": ("blocks.1.mlp_in", "blocks.1.mlp_out"),
         "jumprelu_transcoder": ("blocks.0.mlp_in", "blocks.0.mlp_out")}


@pytest.mark.parametrize("name", SAELENS)
def test_saelens_written_folders_load(name):
    folder = FIX / "saelens" / name
    io = load_file(str(folder / "io.safetensors"))
    m = load(folder)
    assert (m.cfg.site, m.cfg.site_out) == SITES[name] and m.cfg.model == "tiny-llama"
    with torch.no_grad():
        acts, out = m.encode_decode(io["x"])
    torch.testing.assert_close(acts, io["acts"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, io["out"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("hook,site,site_out", [("layers.1", "blocks.1.resid_post", ""),
                                                ("layers.0.mlp", "blocks.0.mlp_in", "blocks.0.mlp_out")])
def test_sparsify_written_folders_load(hook, site, site_out):
    io = load_file(str(FIX / "sparsify" / hook / "io.safetensors"))
    m = load(FIX / "sparsify", hookpoint=hook)
    assert (m.cfg.site, m.cfg.site_out, m.cfg.arch, m.cfg.k) == (site, site_out, "topk", 3)
    with torch.no_grad():
        acts, out = m.encode_decode(io["x"])
    torch.testing.assert_close(acts, io["acts"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, io["out"], atol=1e-5, rtol=1e-5)


def test_site_override():
    m = load(FIX / "saelens" / "topk", site="blocks.0.resid_post")
    assert m.cfg.site == "blocks.0.resid_post"
    with pytest.raises(ValueError, match="holds an SAE, not a transcoder"):
        load(FIX / "saelens" / "topk", site_out="blocks.0.mlp_out")


def test_expected_average_only_in_is_folded(tmp_path):
    """SAELens' fold_activation_norm_scaling_factor: W_enc * f, W_dec / f, b_dec / f; without f: a clear error."""
    import shutil
    src = FIX / "saelens" / "standard"
    shutil.copytree(src, tmp_path / "s")
    cfg = json.loads((src / "cfg.json").read_text())
    (tmp_path / "s" / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "expected_average_only_in"}))
    with pytest.raises(ValueError, match="norm_scaling_factor"):
        load(tmp_path / "s")
    f = 2.5
    m = load(tmp_path / "s", norm_scaling_factor=f)
    io = load_file(str(src / "io.safetensors"))
    # trained on x * f: on raw x the folded SAE gives the original SAE's output on x * f, scaled back by 1 / f
    ref = load(src)
    with torch.no_grad():
        torch.testing.assert_close(m(io["x"]), ref(io["x"] * f) / f, atol=1e-5, rtol=1e-5)
    assert m.cfg.normalize_activations == "none"


# SAELens fields whose values differ by design: the version (SAELens writes its own), actlab's provenance
_VERSION_KEYS = ("sae_lens_version", "sae_lens_training_version")


@pytest.mark.parametrize("name", [n for n in SAELENS if "norm" not in n and "nocentre" not in n])
def test_export_writes_the_cfg_saelens_writes(tmp_path, name):
    """Load a SAELens-written folder, export it with actlab: every field SAELens wrote is there with its value
    (hook names back in TransformerLens form), the version says 6.x, and the weights are the same tensors."""
    from packaging.version import Version
    folder = FIX / "saelens" / name
    theirs = json.loads((folder / "cfg.json").read_text())
    m = load(folder)
    ours = json.loads((export_saelens(m, tmp_path / name) / "cfg.json").read_text())
    for key, val in theirs.items():
        if key == "metadata":
            for mk, mv in val.items():
                if mk in _VERSION_KEYS:
                    assert Version(ours["metadata"][mk]) >= Version("6.0.0"), mk
                else:
                    assert ours["metadata"].get(mk) == mv, (mk, ours["metadata"].get(mk), mv)
        elif key == "reshape_activations" and SITES[name][0].endswith("attn.z"):
            assert ours[key] == "hook_z"              # actlab's attn.z rows are the flattened heads
        else:
            assert ours.get(key) == val, (key, ours.get(key), val)
    assert set(ours) - set(theirs) <= set(), set(ours) - set(theirs)
    w_theirs, w_ours = load_file(str(folder / "sae_weights.safetensors")), load_file(
        str(tmp_path / name / "sae_weights.safetensors"))
    assert set(w_theirs) == set(w_ours)
    for k in w_theirs:
        torch.testing.assert_close(w_ours[k], w_theirs[k], atol=1e-6, rtol=1e-6)


def _trained_like(arch, **kw):
    m = build(DictConfig(arch=arch, d_in=8, d_sae=32, k=3, l1_coef=0.7, site="blocks.1.resid_post",
                         model="tiny-llama", **kw), seed=3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


@pytest.mark.parametrize("arch", ["topk", "relu", "gated", "jumprelu"])
def test_reload_shows_the_original_config(tmp_path, arch):
    m = _trained_like(arch)
    for folder in [export_saelens(m, tmp_path / "sl")] + ([export_sparsify(m, tmp_path / "sp")]
                                                          if arch == "topk" else []):
        back = load(folder)
        assert (back.cfg.expansion, back.cfg.l1_coef, back.cfg.k) == (4, 0.7, 3), folder
        assert (back.cfg.site, back.cfg.model) == ("blocks.1.resid_post", "tiny-llama")


def test_sparsify_export_names_the_hookpoint(tmp_path):
    m = _trained_like("topk")
    folder = export_sparsify(m, tmp_path / "sp")
    assert folder == tmp_path / "sp" / "layers.1"
    assert load(tmp_path / "sp").cfg.site == "blocks.1.resid_post"
    t = build(DictConfig(arch="topk", d_in=8, d_out=8, d_sae=32, k=3, site="blocks.2.mlp_in",
                         site_out="blocks.2.mlp_out"))
    assert export_sparsify(t, tmp_path / "tc").name == "layers.2.mlp"
    back = load(tmp_path / "tc")
    assert (back.cfg.site, back.cfg.site_out) == ("blocks.2.mlp_in", "blocks.2.mlp_out")
    wide = build(DictConfig(arch="topk", d_in=8, d_out=6, d_sae=32, k=3))
    with pytest.raises(ValueError, match="d_in=8 -> d_out=6.*cannot load"):
        export_sparsify(wide, tmp_path / "bad")


# -- export direction with the peers' own loaders (runs where sae_lens / sparsify are installed) ---------------
@pytest.mark.parametrize("arch,kw", [("topk", {}), ("relu", {}), ("jumprelu", {}), ("gated", {}),
                                     ("batchtopk", {}),
                                     ("relu", {"d_out": 6, "site_out": "blocks.1.mlp_out", "skip": True}),
                                     ("jumprelu", {"d_out": 6, "site_out": "blocks.1.mlp_out"})])
def test_saelens_loads_actlab_exports(tmp_path, arch, kw):
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens import SAE
    if "d_out" in kw:
        kw = {**kw, "site": "blocks.1.mlp_in"}
        m = build(DictConfig(arch=arch, d_in=8, d_sae=32, k=3, l1_coef=0.7, model="tiny-llama", **kw), seed=3)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn_like(p))
        m.eval()
    else:
        m = _trained_like(arch)
        if arch == "batchtopk":
            m.threshold.fill_(0.05)
    folder = export_saelens(m, tmp_path / "e")
    sae = SAE.load_from_disk(folder)
    assert sae.cfg.metadata.hook_name == ("blocks.1.hook_resid_post" if "d_out" not in kw
                                          else "blocks.1.ln2.hook_normalized")
    assert sae.cfg.metadata.model_name == "tiny-llama"
    if "d_out" in kw:
        assert sae.cfg.metadata.hook_name_out == "blocks.1.hook_mlp_out"
    x = torch.randn(20, 8)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(x), m.encode(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae(x), m(x), atol=1e-5, rtol=1e-5)
    del sae_lens


@pytest.mark.parametrize("transcoder", [False, True])
def test_sparsify_loads_actlab_exports(tmp_path, transcoder):
    pytest.importorskip("sparsify")
    from sparsify import SparseCoder
    if transcoder:
        m = build(DictConfig(arch="topk", d_in=8, d_out=8, d_sae=32, k=3, skip=True, site="blocks.1.mlp_in",
                             site_out="blocks.1.mlp_out"), seed=3)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn_like(p))
    else:
        m = _trained_like("topk")
    folder = export_sparsify(m, tmp_path / "sp")
    loaded = SparseCoder.load_many(str(tmp_path / "sp"), local=True)
    assert list(loaded) == ["layers.1.mlp" if transcoder else "layers.1"]
    sc = loaded[folder.name]
    x = torch.randn(20, 8)
    with torch.no_grad():
        torch.testing.assert_close(sc(x).sae_out, m(x), atol=1e-5, rtol=1e-5)
