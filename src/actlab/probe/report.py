"""Reports for probe and security runs: one folder with ``report.md`` (human), ``report.json`` (machine) and PNG
figures, every file written atomically through actlab.artifact."""
from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actlab.artifact import atomic_write_bytes, atomic_write_json, atomic_write_text

REPORT_MD, REPORT_JSON = "report.md", "report.json"


def _jsonable(o: Any) -> Any:
    if hasattr(o, "to_json"):
        return _jsonable(o.to_json())
    if isinstance(o, Mapping):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(path: str | Path, draw: Callable[[Any], None], size: tuple[float, float] = (5.0, 4.0)) -> Path:
    """Draw on a fresh matplotlib Axes with ``draw(ax)`` and write it as a PNG atomically."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=size)
    try:
        draw(ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def roc_curve(scores: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) over every threshold, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, dtype=np.float64)
    yy = np.asarray(y, dtype=np.int64)
    order = np.argsort(-s, kind="mergesort")
    tp = np.concatenate([[0], np.cumsum(yy[order] == 1)])
    fp = np.concatenate([[0], np.cumsum(yy[order] == 0)])
    return fp / max(1, fp[-1]), tp / max(1, tp[-1])


def plot_roc(path: str | Path, curves: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> Path:
    """ROC curves ``{label: (scores, labels)}`` with the chance diagonal."""
    def draw(ax: Any) -> None:
        for name, (s, y) in curves.items():
            fpr, tpr = roc_curve(s, y)
            ax.plot(fpr, tpr, label=name)
        ax.plot([0, 1], [0, 1], ":", color="0.5", label="chance")
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.legend(fontsize=8, loc="lower right")

    return save_figure(path, draw)


def write_report(folder: str | Path, title: str, results: Mapping[str, Any], *, lines: list[str] | None = None,
                 figures: Mapping[str, Callable[[Any], None]] | None = None) -> Path:
    """``folder``/report.json (``results``), report.md (``title``, ``lines``, links to figures) and one PNG per
    ``figures`` entry (``{file name: draw(ax)}``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pngs = []
    for name, draw in (figures or {}).items():
        save_figure(folder / name, draw)
        pngs.append(name)
    atomic_write_json(folder / REPORT_JSON, _jsonable({"title": title, **results, "figures": pngs}))
    md = [f"# {title}", "", *(lines or [])]
    md += ["", *[f"![{p}]({p})" for p in pngs], "", f"Numbers: `{REPORT_JSON}`.", ""]
    atomic_write_text(folder / REPORT_MD, "\n".join(md))
    return folder


def fmt(x: Any) -> str:
    """A metric for markdown: an Interval as ``v [lo, hi]``, a float to 3 decimals."""
    if hasattr(x, "lo"):
        return str(x)
    if isinstance(x, float):
        return f"{x:.3f}"
    return json.dumps(x) if isinstance(x, (dict, list)) else str(x)
