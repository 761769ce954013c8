"""PNG plots of the stats report (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    from actlab.stats.emergence import _save_png
    _save_png(fig, path)


def plot_massive(layers: list[dict], path: Path) -> None:
    """Per-layer top |h| (median and max over sequences) and median |h|, log scale."""
    plt = _plt()
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.semilogy(x, [s["top1_median"] for s in layers], "o-", label="top |h| (median over sequences)")
    ax.semilogy(x, [s["top1_max"] for s in layers], "^--", ms=4, label="top |h| (max)")
    ax.semilogy(x, [s["median_abs"] for s in layers], "s-", ms=3, label="median |h|")
    ax.axhline(100, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("layer (resid_post)")
    ax.set_ylabel("|activation|")
    ax.set_title("massive activations per layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_sparsity(layers: list[dict], path: Path) -> None:
    """Mean fraction of active MLP units per token, per layer (error bar: std over tokens)."""
    plt = _plt()
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(x, [s["active_frac_mean"] for s in layers], yerr=[s["active_frac_std"] for s in layers], color="C2")
    eps = layers[0]["eps"] if layers else None
    ax.set_xlabel("layer")
    ax.set_ylabel("active fraction" + (" (a > 0)" if eps is None else f" (|a| > {eps:g})"))
    ax.set_title("MLP activation sparsity")
    fig.tight_layout()
    _save(fig, path)


def plot_channel_ranges(kinds: dict[str, np.ndarray], path: Path) -> None:
    """Heat map per kind of linear input: layers x channels of log10 max |x|."""
    plt = _plt()
    k = len(kinds)
    fig, axes = plt.subplots(k, 1, figsize=(9, 2.2 * k + 0.5), squeeze=False)
    for ax, (name, m) in zip(axes[:, 0], kinds.items()):
        im = ax.imshow(np.log10(np.maximum(m, 1e-6)), aspect="auto", interpolation="nearest", cmap="magma")
        ax.set_title(name, fontsize=8)
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, label="log10 max|x|")
    axes[-1, 0].set_xlabel("input channel")
    fig.tight_layout()
    _save(fig, path)


def plot_calibration(fp_ppl: float, rows: list[dict], path: Path) -> None:
    """Grouped bars: held-out perplexity per quantization method, one bar per calibration set."""
    plt = _plt()
    methods = list(dict.fromkeys(r["method"] for r in rows))
    sets = list(dict.fromkeys(r["calib_set"] for r in rows))
    w = 0.8 / max(len(sets), 1)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for j, cs in enumerate(sets):
        vals = [next(r["ppl"] for r in rows if r["method"] == m and r["calib_set"] == cs) for m in methods]
        ax.bar(np.arange(len(methods)) + j * w, vals, w, label=f"calibrated on {cs}")
    ax.axhline(fp_ppl, color="k", ls="--", lw=1, label=f"fp32 ({fp_ppl:.2f})")
    ax.set_xticks(np.arange(len(methods)) + w * (len(sets) - 1) / 2)
    ax.set_xticklabels(methods, fontsize=8)
    ax.set_ylabel("held-out perplexity")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
