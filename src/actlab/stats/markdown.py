"""Render ``stats.json`` content as a human-readable ``report.md``."""
from __future__ import annotations

from pathlib import Path


def _f(x, nd=3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{nd}g}" if abs(x) < 1e4 else f"{x:.0f}"
    return str(x)


def render(d: dict, plots: dict[str, str], out: Path) -> str:
    meta = d["meta"]
    L = [f"# Activation statistics: {meta['model']}", "",
         f"Data: `{meta['data']}` — {meta['n_tokens']} tokens in {meta['n_contexts']} contexts of "
         f"{meta['context_length']}. Stats pass: {_f(d['timing'].get('tokens_per_s'))} tokens/s.", ""]
    L += [f"> **Note:** {n}" for n in meta.get("notes") or []] + ([""] if meta.get("notes") else [])
    mv = d.get("massive") or {}
    if mv.get("layers"):
        L += ["## Massive activations", "", f"Rule: {mv['rule']}. First layer where at least half of the sequences "
              f"hold one: **{_f(mv['first_layer'])}**. Channels recurring across inputs: "
              f"{mv['recurring_channels'] or 'none'}.", "",
              f"![massive]({plots['massive']})" if (out / plots["massive"]).exists() else "", "",
              "| layer | top \\|h\\| (median) | median \\|h\\| | top/median | seqs with massive | per seq | "
              "top entry (pos, channel, token) |", "|---|---|---|---|---|---|---|"]
        for i, s in enumerate(mv["layers"]):
            t = s["top"][0] if s["top"] else None
            te = f"{_f(t['value'])} at ({t['pos']}, {t['channel']}, {t['token']!r})" if t else ""
            L.append(f"| {i} | {_f(s['top1_median'])} | {_f(s['median_abs'])} | {_f(s['ratio_median'])} | "
                     f"{_f(s['frac_seq_with_massive'])} | {_f(s['massive_per_seq'])} | {te} |")
        ab = mv.get("ablation")
        if ab:
            L += ["", f"**Ablation at `{ab['site']}`** ({ab['n_tokens']} held-out tokens): perplexity "
                  f"{_f(ab['ppl_base'], 4)} unpatched, **{_f(ab['ppl_zero'], 4)}** with massive entries set to zero, "
                  f"**{_f(ab['ppl_mean'], 4)}** set to their mean (mean |Δlogit| {_f(ab['logit_change_zero'])} vs "
                  f"{_f(ab['logit_change_mean'])}). Zero >> mean supports the bias hypothesis."]
        sk = mv.get("attention_sink")
        if sk and sk.get("layers"):
            L += ["", f"**Attention sink**: mean attention mass on the massive tokens (positions "
                  f"{sk['sink_positions']}) after layer {mv['first_layer']}: "
                  f"{_f(sk['mean_mass_after_first_layer'])} vs {_f(sk['uniform_baseline'])} under uniform causal "
                  "attention. Per layer: " + ", ".join(_f(x, 2) for x in sk["layers"]) + "."]
        L.append("")
    sp = d.get("sparsity") or {}
    if sp.get("layers"):
        thr = "a > 0" if sp["eps"] is None else f"|a| > {sp['eps']:g}"
        L += ["## MLP activation sparsity", "", f"Active unit: {thr}, counted per token. Mean active fraction "
              f"{_f(sp['active_frac_mean'])}; skipping inactive units would save "
              f"{_f(sp['flop_savings']['down_proj'])} of the down projection "
              f"({_f(sp['flop_savings']['mlp_total'])} of MLP matmul FLOPs).", "",
              f"![sparsity]({plots['sparsity']})", "", "| layer | active fraction | std | dead units |",
              "|---|---|---|---|"]
        L += [f"| {i} | {_f(s['active_frac_mean'])} | {_f(s['active_frac_std'])} | {s['dead_units']} |"
              for i, s in enumerate(sp["layers"])]
        L.append("")
    ol = d.get("outliers") or {}
    if ol.get("kinds"):
        L += ["## Linear-layer inputs: ranges and outlier features", "", f"Outlier rule: {ol['rule']}.", "",
              f"![ranges]({plots['ranges']})" if (out / plots["ranges"]).exists() else "", "",
              "| input kind | layers | width | max \\|x\\| | max kurtosis | outlier features |", "|---|---|---|---|---|---|"]
        for k, s in ol["kinds"].items():
            L.append(f"| `{k}` | {s['layers']} | {s['width']} | {_f(s['absmax_max'])} | {_f(s['kurtosis_max'])} | "
                     f"{s['outlier_features'][:12]}{' ...' if len(s['outlier_features']) > 12 else ''} |")
        L.append("")
    cal = d.get("calibration") or {}
    if cal.get("rows"):
        L += ["## Calibration-set sensitivity (fake quantization)", "",
              f"Held-out perplexity on {cal['eval_tokens']} tokens; fp32: **{_f(cal['fp_ppl'], 4)}**. Calibration "
              f"sets: {cal['calib_contexts']} contexts of {cal['calib_length']} tokens. Weights INT8 per output "
              "channel; activations INT8 per tensor with static calibrated scales.", "",
              f"![calibration]({plots['calibration']})", "", "| method | calibration set | perplexity |", "|---|---|---|"]
        L += [f"| {r['method']} | {r['calib_set']} | {_f(r['ppl'], 4)} |" for r in cal["rows"]]
        L += ["", "Spread across calibration sets (max - min perplexity): " +
              ", ".join(f"{k}: {_f(v)}" for k, v in cal["spread"].items()) + ".", ""]
    return "\n".join(L) + "\n"
