"""The sections of the stats report, each turning accumulators (or extra forward passes) into JSON-able dicts."""
from __future__ import annotations

import logging
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
import torch

from actlab.stats.collect import StatsCollector, group_kind, layer_index

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)


def _layer_sites(col_dict: dict, kind: str) -> list[str]:
    return sorted((s for s in col_dict if s.endswith(kind)), key=layer_index)


def massive_section(m: Model, col: StatsCollector) -> dict:
    """Per-layer massive-activation table, first layer where they appear, channels recurring across inputs."""
    from actlab.stats.massive import first_massive_layer

    sites = _layer_sites(col.massive, ".resid_post")
    if not sites:
        return {}
    layers = [col.massive[s].summary(m.tokenizer) for s in sites]
    first = first_massive_layer(layers)
    recurring = sorted({c for s in layers if s["frac_seq_with_massive"] >= 0.5 for c in s["recurring_channels"]})
    out = {"rule": "|h| > 100 and |h| >= 1000 * median(|h|) per sequence and layer", "sites": sites,
           "layers": layers, "first_layer": first, "recurring_channels": recurring}
    if first is not None:
        means = col.massive[sites[first]].channel_means()
        out["channel_means_first_layer"] = {int(c): float(means[c]) for c in (~torch.isnan(means)).nonzero().flatten()}
    return out


def sparsity_section(m: Model, col: StatsCollector) -> dict:
    """Per-layer active fraction of MLP hidden units, and the FLOP savings it would allow."""
    from actlab.stats.sparsity import flop_savings, is_gated

    sites = _layer_sites(col.sparsity, ".mlp_act")
    if not sites:
        return {}
    layers = [col.sparsity[s].summary() for s in sites]
    mean = float(np.mean([s["active_frac_mean"] for s in layers]))
    return {"sites": sites, "layers": layers, "active_frac_mean": mean, "eps": layers[0]["eps"],
            "flop_savings": flop_savings(mean, is_gated(m))}


def outlier_section(col: StatsCollector) -> tuple[dict, dict[str, np.ndarray]]:
    """Per linear-input group: ranges and kurtosis; per kind of input: LLM.int8() outlier features; the
    layers x channels max|x| matrices for the heat map."""
    from actlab.stats.quant import find_outliers

    if not col.channels:
        return {}, {}
    kinds: dict[str, list[str]] = {}
    for name in col.channels:
        kinds.setdefault(group_kind(name), []).append(name)
    groups = {n: col.channels[n].summary() for n in col.channels}
    out_kinds, heat = {}, {}
    for kind, names in kinds.items():
        names = sorted(names, key=layer_index)
        stats = [col.channels[n] for n in names]
        feats = find_outliers(stats) if len({s.d for s in stats}) == 1 else []
        out_kinds[kind] = {"layers": len(names), "width": stats[0].d, "outlier_features": feats,
                           "absmax_max": max(s["absmax"] for s in (groups[n] for n in names)),
                           "kurtosis_max": max(groups[n]["kurtosis_max"] for n in names)}
        if len(names) > 1 and len({s.d for s in stats}) == 1:
            heat[kind] = np.stack([s.amax.float().numpy() for s in stats])
    rule = "LLM.int8(): |x| >= 6 on >= 6% of tokens in >= 25% of the layers of a kind"
    return {"rule": rule, "groups": groups, "kinds": out_kinds}, heat


def ablation_section(m: Model, col: StatsCollector, held: torch.Tensor, first: int, batch_size: int,
                     progress: bool = False) -> dict:
    """Zero vs mean patching of the massive entries at the first layer where they appear."""
    from actlab.stats.massive import ablation_test

    site = f"blocks.{first}.resid_post"
    res = ablation_test(m, site, held, col.massive[site].channel_means(), batch_size, progress)
    return {**asdict(res), "n_tokens": int(held.numel())}


def attention_section(m: Model, ids: torch.Tensor, first: int) -> dict:
    """Attention mass on the tokens that carry massive activations, per layer, vs uniform causal attention."""
    from actlab.stats.massive import attention_sink, massive_mask

    site = f"blocks.{first}.resid_post"
    h = m.record(ids, [site])[site]
    sink = massive_mask(h).any(-1)                    # [b, p]
    if not bool(sink.any()):
        return {}
    try:
        mass = attention_sink(m, ids, sink)
    except (ValueError, TypeError, AttributeError) as e:
        log.warning("attention-sink check skipped: %s", e)
        return {"error": str(e)}
    p = ids.shape[1]
    cum = sink.float().cumsum(1)
    uniform = float((cum[:, 1:] / torch.arange(2, p + 1)).mean())
    pos = sorted({int(j) for j in sink.nonzero()[:, 1].tolist()})
    return {"layers": mass, "uniform_baseline": uniform, "sink_positions": pos[:20],
            "mean_mass_after_first_layer": float(np.mean(mass[first + 1:])) if len(mass) > first + 1 else None}


def calibration_section(m: Model, docs: list[str], held: torch.Tensor, calib_pool: torch.Tensor, cfg,
                        progress: bool = False) -> dict:
    """Held-out perplexity of W8A8 fake quantization calibrated on in-distribution text, random punctuation and
    another domain (Python source code)."""
    from actlab.data import pack_contexts
    from actlab.stats.calibration import calibration_study, code_text, punctuation_text

    n, cl = cfg.calib_contexts, cfg.calib_length
    need = n * cl
    sets = {}
    if calib_pool.numel() >= need:
        sets["in-distribution"] = calib_pool.reshape(-1)[:need].view(n, cl)
    sets["random punctuation"] = pack_contexts(m.tokenizer, [punctuation_text(need * 4, cfg.seed)], cl,
                                               max_contexts=n).input_ids
    sets["python code"] = pack_contexts(m.tokenizer, [code_text(need * 8)], cl, max_contexts=n).input_ids
    fp, rows = calibration_study(m, held, sets, cfg.batch_size, progress=progress)
    rows_d = [asdict(r) for r in rows]
    spread = {}
    for meth in dict.fromkeys(r.method for r in rows):
        v = [r.ppl for r in rows if r.method == meth]
        spread[meth] = max(v) - min(v)
    return {"fp_ppl": fp, "rows": rows_d, "spread": spread, "calib_contexts": {k: len(v) for k, v in sets.items()},
            "calib_length": cl, "eval_tokens": int(held.numel())}
