"""SAELens / sparsify folders written by the test in their layouts load to the same reconstructions; export
round-trips; actlab save/load round-trips."""
import json

import pytest
import torch
from safetensors.torch import save_file

from actlab.dictionary import DictConfig, build, load
from actlab.dictionary.formats import export_saelens, export_sparsify, load_foreign


def _rand(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_saelens_topk_folder_by_hand(tmp_path):
    d, n, k = 16, 64, 5
    W_enc, b_enc, W_dec, b_dec = _rand(1, d, n) / 4, _rand(2, n) * 0.1, _rand(3, n, d) / 4, _rand(4, d) * 0.1
    save_file({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({
        "architecture": "topk", "d_in": d, "d_sae": n, "k": k, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none",
        "metadata": {"model_name": "tiny-llama", "hook_name": "blocks.0.resid_post"}}))
    x = _rand(5, 32, d)
    pre = (x - b_dec) @ W_enc + b_enc                      # SAELens TopK: topk, then ReLU
    v, i = pre.topk(k, dim=-1)
    ref = torch.zeros_like(pre).scatter(-1, i, v.relu()) @ W_dec + b_dec
    m = load(tmp_path)
    assert m.cfg.arch == "topk" and m.cfg.site == "blocks.0.resid_post" and m.cfg.model == "tiny-llama"
    assert torch.allclose(m(x), ref, atol=1e-5)


@pytest.mark.parametrize("arch", ["standard", "jumprelu"])
def test_saelens_relu_jumprelu_by_hand(tmp_path, arch):
    d, n = 8, 24
    W_enc, b_enc, W_dec, b_dec = _rand(1, d, n), _rand(2, n), _rand(3, n, d), _rand(4, d)
    thr = _rand(6, n).abs()
    t = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    if arch == "jumprelu":
        t["threshold"] = thr
    save_file(t, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": arch, "d_in": d, "d_sae": n,
                                                   "apply_b_dec_to_input": False, "normalize_activations": "none"}))
    x = _rand(5, 20, d)
    pre = x @ W_enc + b_enc                                   # apply_b_dec_to_input=False: no centring
    acts = pre.relu() * ((pre > thr) if arch == "jumprelu" else 1)
    ref = acts @ W_dec + b_dec
    assert torch.allclose(load(tmp_path)(x), ref, atol=1e-4)


def test_sparsify_folder_by_hand(tmp_path):
    d, n, k = 12, 48, 3
    enc_w, enc_b, W_dec, b_dec = _rand(1, n, d), _rand(2, n), _rand(3, n, d), _rand(4, d)
    hp = tmp_path / "layers.3"
    hp.mkdir()
    save_file({"encoder.weight": enc_w, "encoder.bias": enc_b, "W_dec": W_dec, "b_dec": b_dec},
              str(hp / "sae.safetensors"))
    (hp / "cfg.json").write_text(json.dumps({"activation": "topk", "num_latents": n, "k": k, "d_in": d,
                                             "transcode": False, "skip_connection": False}))
    x = _rand(5, 10, d)
    pre = ((x - b_dec) @ enc_w.t() + enc_b).relu()           # sparsify: ReLU, then topk
    v, i = pre.topk(k, dim=-1)
    ref = torch.zeros_like(pre).scatter(-1, i, v) @ W_dec + b_dec
    m = load_foreign(tmp_path)                               # parent folder with one hookpoint
    assert m.cfg.site == "blocks.3.resid_post"          # the hookpoint mapped to an actlab site
    assert torch.allclose(m(x), ref, atol=1e-4)


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu", "gated", "batchtopk"])
def test_export_roundtrips(tmp_path, arch):
    m = build(DictConfig(arch=arch, d_in=10, d_sae=40, k=4, site="blocks.1.resid_post", model="tiny-llama"), seed=2)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if arch == "batchtopk":
            m.threshold.fill_(0.2)
    m.eval()
    x = torch.randn(30, 10)
    ref = m(x)
    a = load(export_saelens(m, tmp_path / "saelens"))
    assert torch.allclose(a(x), ref, atol=1e-5)
    m.save(tmp_path / "native")
    assert torch.allclose(load(tmp_path / "native")(x), ref, atol=0)
    if arch == "topk":
        assert torch.allclose(load(export_sparsify(m, tmp_path / "sp"))(x), ref, atol=1e-5)


def test_transcoder_exports(tmp_path):
    m = build(DictConfig(arch="relu", d_in=10, d_out=6, d_sae=40, skip=True, site="blocks.0.mlp_in",
                         site_out="blocks.0.mlp_out"), seed=1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(7, 10)
    a = load(export_saelens(m, tmp_path / "tc"))
    assert json.loads((tmp_path / "tc" / "cfg.json").read_text())["architecture"] == "skip_transcoder"
    assert torch.allclose(a(x), m(x), atol=1e-5)
    t = build(DictConfig(arch="topk", k=3, d_in=10, d_out=10, d_sae=40), seed=1)
    with torch.no_grad():
        t.b_pre.add_(0.3)
    assert torch.allclose(load(export_sparsify(t, tmp_path / "sp"))(x), t(x), atol=1e-5)
    with pytest.raises(ValueError, match="no topk transcoder"):
        export_saelens(t, tmp_path / "bad")


def test_unknown_folder_error(tmp_path):
    with pytest.raises(ValueError, match="no known dictionary"):
        load(tmp_path)


@pytest.mark.parametrize("centre", [True, False])
def test_saelens_gated_by_hand(tmp_path, centre):
    """SAELens gated encode: gate = (x' W_enc + b_gate > 0), mag = ReLU(x' (W_enc * exp(r_mag)) + b_mag), with
    x' = x - b_dec only when apply_b_dec_to_input; the magnitude bias must absorb the centring shift too."""
    d, n = 8, 24
    W_enc, b_gate, W_dec, b_dec = _rand(1, d, n), _rand(2, n), _rand(3, n, d), _rand(4, d) * 2
    r_mag, b_mag = _rand(6, n) * 0.3, _rand(7, n)
    save_file({"W_enc": W_enc, "b_gate": b_gate, "r_mag": r_mag, "b_mag": b_mag, "W_dec": W_dec, "b_dec": b_dec},
              str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "gated", "d_in": d, "d_sae": n,
                                                   "apply_b_dec_to_input": centre,
                                                   "normalize_activations": "none"}))
    x = _rand(5, 20, d)
    xin = x - b_dec if centre else x
    gate = (xin @ W_enc + b_gate) > 0
    mag = (xin @ (W_enc * r_mag.exp()) + b_mag).relu()
    acts = gate * mag
    m = load(tmp_path)
    assert torch.allclose(m.encode(x), acts, atol=1e-4)
    assert torch.allclose(m(x), acts @ W_dec + b_dec, atol=1e-4)


def test_nonfinite_weights_refused(tmp_path):
    """NaN/Inf dictionary weights: refused on save, and on load from actlab, SAELens and sparsify folders."""
    m = build(DictConfig(arch="topk", d_in=4, d_sae=8, k=2, site="blocks.0.resid_post"))
    m.save(tmp_path / "ok")
    with torch.no_grad():
        m.W_dec[1, 2] = float("nan")
    with pytest.raises(ValueError, match="W_dec' contains NaN/Inf"):
        m.save(tmp_path / "nan")
    sd = {k: v.clone() for k, v in load(tmp_path / "ok").state_dict().items()}
    sd["b_enc"][0] = float("inf")
    save_file(sd, str(tmp_path / "ok" / "dictionary.safetensors"))          # as a corrupted/legacy writer would
    with pytest.raises(ValueError, match="b_enc.*NaN/Inf"):
        load(tmp_path / "ok")
    w = {"W_enc": torch.zeros(4, 8), "b_enc": torch.zeros(8), "W_dec": torch.full((8, 4), float("nan")),
         "b_dec": torch.zeros(4)}
    (tmp_path / "sl").mkdir()
    save_file(w, str(tmp_path / "sl" / "sae_weights.safetensors"))
    (tmp_path / "sl" / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": 4, "d_sae": 8}))
    with pytest.raises(ValueError, match="W_dec.*NaN/Inf"):
        load(tmp_path / "sl")
    (tmp_path / "sp" / "layers.0").mkdir(parents=True)
    save_file({"encoder.weight": torch.zeros(8, 4), "encoder.bias": torch.full((8,), float("nan")),
               "W_dec": torch.zeros(8, 4), "b_dec": torch.zeros(4)}, str(tmp_path / "sp" / "layers.0" / "sae.safetensors"))
    (tmp_path / "sp" / "layers.0" / "cfg.json").write_text(json.dumps({"k": 2, "num_latents": 8, "d_in": 4}))
    with pytest.raises(ValueError, match="encoder.bias.*NaN/Inf"):
        load(tmp_path / "sp")
