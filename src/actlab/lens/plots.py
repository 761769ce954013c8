"""PNG figures of the lens family: per-site KL / rank of a logit or tuned lens, and a DLA bar chart (atomic writes)."""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actlab.lens.dla import DLAResult
    from actlab.lens.logit_lens import LensResult


def _save(fig, path: str | Path) -> str:
    import matplotlib.pyplot as plt

    from actlab.artifact import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def _short(site: str) -> str:
    return site.replace("blocks.", "").replace(".resid_", " r")


def plot_lens(results: LensResult | Sequence[LensResult], path: str | Path) -> str:
    """Mean KL(final || lens) (log scale) and mean rank of the model's top token, per site; one line per result
    (e.g. the logit lens and a tuned lens on the same texts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [results] if not isinstance(results, (list, tuple)) else list(results)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(7.0, 0.35 * len(results[0].sites) * 2), 3.6))
    for r in results:
        x = range(len(r.sites))
        m = r.mask.float()
        rank = ((r.rank.float() * m).sum((1, 2)) / m.sum()).cpu()
        a1.plot(x, r.mean_kl().cpu().clamp_min(1e-6), marker="o", label=f"{r.lens} lens")
        a2.plot(x, rank + 1, marker="o", label=f"{r.lens} lens")
    labels = [_short(s) for s in results[0].sites]
    for ax, title in ((a1, "KL(final ‖ lens), nats"), (a2, "rank of the model's top token (1 = top)")):
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{results[0].meta.get('model', '')}: lens per site", fontsize=10)
    return _save(fig, path)


def plot_dla(result: DLAResult, path: str | Path, row: int = 0, k: int = 20) -> str:
    """Horizontal bars: the top-k direct contributions of one row, with the total and the model's logit in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = result.top(k, row)[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.25 * len(top) + 1.2))
    vals = [v for _, v in top]
    ax.barh(range(len(top)), vals, color=["tab:blue" if v >= 0 else "tab:red" for v in vals])
    ax.set_yticks(range(len(top)))
    ax.set_yticklabels([lab for lab, _ in top], fontsize=7)
    what = "logit difference" if result.contrast is not None else "logit"
    ax.set_title(f"direct {what} attribution: sum {float(result.total[row]):.3f} = model "
                 f"{float(result.logit[row]):.3f}", fontsize=9)
    ax.axvline(0, color="k", lw=0.5)
    return _save(fig, path)
