"""`actlab stats` (run_stats) and the store feed on every tiny architecture: the report's numbers equal a direct
recording of the measured inputs; BERT (not a causal LM) is refused naming its architecture."""
import pytest
import torch

from actlab.artifact import load_tensors
from actlab.models.tiny import TINY
from actlab.stats.report import StatsConfig, run_stats

TEXT = ("Statistics of hidden activations differ between architectures, but the definitions do not. " * 30)


@pytest.mark.parametrize("name", sorted(TINY))
def test_stats_on_every_architecture(tiny, tmp_path, name):
    m = tiny(name)
    data = tmp_path / "d.txt"
    data.write_text(TEXT)
    cfg = StatsConfig(model=name, data=str(data), out=str(tmp_path / "rep"), tokens=64, context_length=32,
                      ablation_tokens=32, sink_contexts=1, eval_tokens=32, calib_contexts=1, calib_length=16)
    if not m.is_causal_lm:
        with pytest.raises(ValueError, match=rf"needs a causal LM.*{m.family}"):
            run_stats(cfg, model=m, progress=False)
        return
    before = {k: v.clone() for k, v in m.module.state_dict().items()}
    rep = run_stats(cfg, model=m, progress=False)
    assert all(torch.equal(before[k], v) for k, v in m.module.state_dict().items())   # quantization undone
    ids = load_tensors(tmp_path / "rep" / "inputs.safetensors")["input_ids"]
    assert ids.shape == (2, 32) and rep.meta["n_tokens"] == 64
    last = f"blocks.{m.n_layers - 1}.resid_post"
    h = m.record(ids, [last])[last].abs()
    lay = rep.massive["layers"][m.n_layers - 1]
    assert lay["top1_max"] == pytest.approx(float(h.max()), rel=1e-5)
    assert lay["top1_median"] == pytest.approx(float(h.flatten(1).max(1).values.median()), rel=1e-5)
    if "blocks.0.mlp_act" in m.sites:
        a = m.record(ids, ["blocks.0.mlp_act"])["blocks.0.mlp_act"]
        eps = rep.sparsity["eps"]
        active = (a > 0) if eps is None else (a.abs() > eps)
        assert rep.sparsity["layers"][0]["active_frac_mean"] == pytest.approx(float(active.float().mean()), rel=1e-5)
        assert rep.sparsity["flop_savings"]["mlp_total"] == pytest.approx(
            (1 - rep.sparsity["active_frac_mean"]) / (3 if name == "tiny-llama" else 2))
    else:
        assert not rep.sparsity                             # Mixtral: experts, no single mlp_act site
    groups = rep.outliers["groups"]
    if m.adapter.conv1d:                                    # GPT-2's [in, out] layers are linear layers too
        assert {"transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_proj"} <= set(groups)
        x = m.record(ids, ["module:transformer.h.1.mlp.c_proj:in"])["module:transformer.h.1.mlp.c_proj:in"]
        assert groups["transformer.h.1.mlp.c_proj"]["absmax"] == pytest.approx(float(x.abs().max()), rel=1e-5)
    assert groups and torch.isfinite(torch.tensor(rep.calibration["fp_ppl"]))
    assert len(rep.calibration["rows"]) == 9
