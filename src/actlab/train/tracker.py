"""The checkpoint tracker: save checkpoints (actlab artifacts) at log-spaced steps of a training run and measure
chosen metrics at each into one ``metrics.jsonl``; plot them and fit emergence curves with ``actlab.stats``.

Use it from any loop::

    tracker = CheckpointTracker(out, total_steps=2000, n_checkpoints=12, metrics={"sparsity": sparsity_metric(...)})
    for step in range(total + 1):
        tracker.on_step_end(step, model, loss=loss)      # saves + measures only at scheduled steps
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from actlab.artifact import atomic_write_text, load_artifact, save_artifact

if TYPE_CHECKING:
    from actlab.models import Model
    from actlab.stats import CurveFamily, CurveFit
    from actlab.train.metrics import Metric

log = logging.getLogger(__name__)

KIND = "actlab.train.checkpoint"
METRICS_FILE = "metrics.jsonl"


def log_spaced_steps(total: int, n: int) -> list[int]:
    """``n`` distinct log-spaced steps in ``[0, total]``, 0 and ``total`` included (fewer when ``total`` is small):
    the schedule of ``actlab.stats``' checkpoint series (``CheckpointSeriesConfig.schedule``), the only one."""
    from actlab.stats import checkpoint_steps

    return checkpoint_steps(total, n)


def save_checkpoint(folder: str | Path, module: torch.nn.Module, step: int, meta: Mapping[str, Any] | None = None
                    ) -> Path:
    """A checkpoint artifact: the module's state dict (safetensors) and ``{step, meta}`` in cfg.json."""
    tensors = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    return save_artifact(folder, KIND, {"step": int(step), "module": type(module).__name__, "meta": dict(meta or {})},
                         tensors)


def load_checkpoint(folder: str | Path, module: torch.nn.Module) -> int:
    """Load a checkpoint artifact into ``module`` (strict: every parameter must match); returns its step."""
    art = load_artifact(folder, KIND)
    missing, unexpected = module.load_state_dict(art.tensors, strict=False)
    if missing or unexpected:
        raise KeyError(f"checkpoint {folder} does not fit {type(module).__name__}: missing {missing[:5]}, "
                       f"unexpected {unexpected[:5]}")
    return int(art.config["step"])


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """``{"sparsity": [..]}`` stays; ``{"massive": {"top1": [..]}}`` becomes ``{"massive.top1": [..]}``."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}", v))
        return out
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    return {prefix: value}


class CheckpointTracker:
    """Checkpoints + metrics at log-spaced steps (or the ``steps`` given) of one run, written under ``out``:
    ``checkpoints/step-<N>/`` (artifacts, when ``save``) and ``metrics.jsonl`` (one JSON object per checkpoint)."""

    def __init__(self, out: str | Path, total_steps: int, n_checkpoints: int = 10, *,
                 metrics: Mapping[str, Metric] | None = None, steps: list[int] | None = None, save: bool = True):
        self.out = Path(out)
        self.steps = sorted(set(steps)) if steps is not None else log_spaced_steps(total_steps, n_checkpoints)
        self.metrics = dict(metrics or {})
        self.save = save
        self.records: list[dict] = []
        self.out.mkdir(parents=True, exist_ok=True)

    def due(self, step: int) -> bool:
        return step in self.steps

    def on_step_end(self, step: int, model: Model, **scalars: float) -> dict | None:
        """At a scheduled step: save the checkpoint, measure every metric (no gradients, eval mode, restored after),
        append the record (with ``scalars`` such as the training loss) to metrics.jsonl; returns it. Else None."""
        if not self.due(step):
            return None
        mod = model.module
        if self.save:
            save_checkpoint(self.out / "checkpoints" / f"step-{step}", mod, step)
        was = mod.training
        mod.eval()
        rec: dict[str, Any] = {"step": int(step)}
        rec.update({k: float(v) for k, v in scalars.items()})
        try:
            with torch.no_grad():
                for name, fn in self.metrics.items():
                    rec.update(flatten(name, fn(model)))
        finally:
            mod.train(was)
        self.records.append(rec)
        atomic_write_text(self.out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in self.records))
        log.info("checkpoint %d: %s", step, {k: v for k, v in rec.items() if not isinstance(v, list)})
        return rec

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one recorded key; values ``[n_ckpt]`` or ``[n_ckpt, n]`` for per-layer lists."""
        have = [r for r in self.records if key in r]
        if not have:
            known = sorted({k for r in self.records for k in r if k != "step"})
            raise KeyError(f"no metric {key!r} recorded; recorded: {known}")
        return np.array([r["step"] for r in have], dtype=float), np.array([r[key] for r in have], dtype=float)

    def fit_emergence(self, key: str, family: CurveFamily | None = None) -> list[CurveFit]:
        """Fit each column of ``key``'s time course with ``actlab.stats.fit_curve`` (the five-parameter emergence
        curve by default); one fit per layer for per-layer metrics."""
        from actlab.stats import EXP_LOG, fit_curve

        t, y = self.series(key)
        cols = y[:, None] if y.ndim == 1 else y
        return [fit_curve(t, cols[:, j], family or EXP_LOG) for j in range(cols.shape[1])]

    def plot(self, keys: list[str] | None = None, name: str = "metrics.png") -> Path:
        """One PNG, a panel per key (per-layer metrics: a line per layer), log-scaled step axis."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from actlab.train.report import save_png

        keys = keys or sorted({k for r in self.records for k in r if k != "step"})
        fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
        for ax, key in zip(axes[0], keys):
            t, y = self.series(key)
            cols = y[:, None] if y.ndim == 1 else y
            for j in range(cols.shape[1]):
                ax.plot(t, cols[:, j], "o-", ms=3, label=f"layer {j}" if cols.shape[1] > 1 else None)
            ax.set_xscale("symlog", linthresh=1)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step")
            if cols.shape[1] > 1:
                ax.legend(fontsize=6)
        fig.tight_layout()
        return save_png(fig, self.out / name)


def read_metrics(out: str | Path) -> list[dict]:
    """The records of a tracker's ``metrics.jsonl``."""
    path = Path(out) / METRICS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: not a tracker output folder")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
