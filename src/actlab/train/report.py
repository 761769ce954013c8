"""Writing recipe reports: JSON through ``actlab.artifact`` (atomic) and PNG line plots."""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from actlab.artifact import atomic_write_bytes, atomic_write_json


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/Inf become None, tuples lists, numpy scalars plain numbers."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            x = x.item()
        except (ValueError, TypeError):
            return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(out: str | Path, name: str, obj: Any) -> Path:
    """``out/name`` with ``format_version`` added, written atomically."""
    Path(out).mkdir(parents=True, exist_ok=True)
    return atomic_write_json(Path(out) / name, {"format_version": 1, **_clean(obj)})


def save_png(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, buf.getvalue())


def plot_curves(out: str | Path, name: str, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
                xlabel: str = "training step", ylabel: str = "", title: str = "", logx: bool = False,
                hline: tuple[float, str] | None = None) -> Path:
    """One PNG with a line per ``{label: (x, y)}``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, (x, y) in curves.items():
        ax.plot(list(x), [float("nan") if v is None else v for v in y], label=label, lw=1.5)
    if hline is not None:
        ax.axhline(hline[0], color="grey", ls=":", label=hline[1])
    if logx:
        ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, Path(out) / name)
