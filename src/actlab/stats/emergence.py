"""Emergence of massive activations over training (arXiv 2508.03616): per-layer magnitudes on a fixed probe set
across checkpoints, fitted per layer with a pluggable five-parameter curve family; parameters and R² reported."""
from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)


def exp_log_curve(t: np.ndarray, A: float, lam: float, log_tau: float, t0: float, K: float) -> np.ndarray:
    """``f(t) = A exp(-lam t') log(1 + t'/tau) + K``, ``t' = max(0, t - t0)``, ``tau = exp(log_tau)``."""
    tp = np.maximum(0.0, np.asarray(t, dtype=float) - t0)
    return A * np.exp(-lam * tp) * np.log1p(tp / np.exp(log_tau)) + K


@dataclass
class CurveFamily:
    """A parametric time course: ``fn(t, *params)``, parameter names, and a function giving initial guesses
    (several starts) and bounds from the data ``(t, y) -> (list of p0, (lower, upper))``."""

    fn: Callable
    names: tuple[str, ...]
    init: Callable


def _exp_log_init(t: np.ndarray, y: np.ndarray):
    tmax = float(t.max()) or 1.0
    span = float(y.max() - y.min()) or 1.0
    K0 = float(y[: max(1, len(y) // 20)].mean())
    starts = []
    for lam in (0.0, 1.0 / tmax, 10.0 / tmax, 30.0 / tmax):
        for tau in (tmax / 1000, tmax / 30, tmax / 3):
            for t0 in (0.0, float(t[np.argmax(np.abs(y - K0) > 0.1 * span)]) if len(t) else 0.0):
                g = math.exp(-lam * tmax / 3) * math.log1p(tmax / 3 / tau) or 1.0
                sign = 1.0 if y.max() - K0 >= K0 - y.min() else -1.0
                starts.append([sign * span / g, lam, math.log(tau), t0, K0])
    lo = [-np.inf, 0.0, math.log(tmax) - 20, float(t.min()) - 1.0, -np.inf]
    hi = [np.inf, 1e3 / tmax, math.log(tmax) + 5, float(t.max()), np.inf]
    return starts, (lo, hi)


EXP_LOG = CurveFamily(exp_log_curve, ("A", "lam", "log_tau", "t0", "K"), _exp_log_init)


@dataclass
class CurveFit:
    """Fitted parameters (by name), R² of the fit and the family used."""

    params: dict[str, float]
    r2: float
    family: str = "exp_log"

    def predict(self, t, family: CurveFamily = EXP_LOG) -> np.ndarray:
        return family.fn(np.asarray(t, dtype=float), *[self.params[n] for n in family.names])


def r_squared(y: np.ndarray, yhat: np.ndarray) -> float:
    ss_res = float(np.sum((y - yhat) ** 2))
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)


def fit_curve(t, y, family: CurveFamily = EXP_LOG, name: str = "exp_log") -> CurveFit:
    """Least-squares fit of ``family`` to ``(t, y)`` from several starts (scipy ``curve_fit``); best R² wins."""
    from scipy.optimize import curve_fit

    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    if t.shape != y.shape or t.ndim != 1 or len(t) < len(family.names) + 1:
        raise ValueError(f"fit_curve needs 1-D t and y of equal length > {len(family.names)}; got {t.shape}, {y.shape}")
    starts, bounds = family.init(t, y)
    best = None
    for p0 in starts:
        p0 = np.clip(p0, np.asarray(bounds[0]) + 1e-12, np.asarray(bounds[1]) - 1e-12)
        try:
            p, _ = curve_fit(family.fn, t, y, p0=p0, bounds=bounds, maxfev=4000)
        except (RuntimeError, ValueError):
            continue
        r2 = r_squared(y, family.fn(t, *p))
        if best is None or r2 > best[1]:
            best = (p, r2)
    if best is None:
        raise RuntimeError("fit_curve: no start converged")
    return CurveFit({n: float(v) for n, v in zip(family.names, best[0])}, best[1], name)


def pythia_steps() -> np.ndarray:
    """Pythia's 154 released checkpoint steps: 0, 1, 2, 4, ..., 512, then every 1000 up to 143000."""
    return np.array([0] + [2 ** i for i in range(10)] + list(range(1000, 143001, 1000)), dtype=float)


def checkpoint_step(path: Path) -> int:
    """Training step of a checkpoint folder: ``trainer_state.json``-free convention ``step-<N>`` / ``step<N>``
    / ``checkpoint-<N>``, or ``actlab_step`` in its ``config.json``."""
    m = re.search(r"(?:step|checkpoint)[-_]?(\d+)", path.name)
    if m:
        return int(m.group(1))
    import json

    cfg = json.loads((path / "config.json").read_text())
    if "actlab_step" in cfg:
        return int(cfg["actlab_step"])
    raise ValueError(f"cannot tell the training step of checkpoint {path}: name it step-<N> or set actlab_step "
                     f"in its config.json")


@dataclass
class Emergence:
    """Per checkpoint and layer: median over probe sequences of the top |h| and of top1/median; per-layer fits."""

    steps: list[int]
    top1: list[list[float]]          # [n_ckpt][n_layers]
    ratio: list[list[float]]         # [n_ckpt][n_layers]
    fits: dict[int, dict] = field(default_factory=dict)


def track_checkpoints(folders: list[str | Path], probe_ids: torch.Tensor, metric: str = "top1",
                      family: CurveFamily = EXP_LOG, batch_size: int = 8) -> Emergence:
    """Load each checkpoint folder, measure per-layer massive magnitudes on ``probe_ids``, fit each layer's
    time course (``metric`` 'top1' or 'ratio') with ``family``."""
    from actlab import load_model
    from actlab.stats.massive import LayerMassive

    folders = sorted((Path(f) for f in folders), key=checkpoint_step)
    if not folders:
        raise ValueError("track_checkpoints: no checkpoint folders given")
    em = Emergence([], [], [])
    for f in folders:
        m = load_model(f)
        sites = [f"blocks.{i}.resid_post" for i in range(m.n_layers)]
        acc = [LayerMassive(m.d_model) for _ in sites]
        for s in range(0, len(probe_ids), batch_size):
            x = probe_ids[s:s + batch_size]
            rec = m.record(x, sites)
            for a, site in zip(acc, sites):
                a.update(rec[site], x)
        sums = [a.summary() for a in acc]
        em.steps.append(checkpoint_step(f))
        em.top1.append([s["top1_median"] for s in sums])
        em.ratio.append([s["ratio_median"] for s in sums])
        log.info("checkpoint %s: top1 per layer %s", f.name, [round(v, 2) for v in em.top1[-1]])
    ys = np.asarray(em.top1 if metric == "top1" else em.ratio)
    for layer in range(ys.shape[1]):
        try:
            fit = fit_curve(np.asarray(em.steps, dtype=float), ys[:, layer], family)
            em.fits[layer] = {"params": fit.params, "r2": fit.r2}
        except (RuntimeError, ValueError) as e:
            em.fits[layer] = {"error": str(e)}
    return em


def checkpoint_folders(paths: list[str | Path]) -> list[Path]:
    """Checkpoint folders (with config.json) from the paths given, or the ``step-*`` folders of one parent."""
    folders = [Path(c) for c in paths]
    if len(folders) == 1 and not (folders[0] / "config.json").exists():
        folders = sorted(p for p in folders[0].glob("step-*") if (p / "config.json").exists())
    missing = [str(f) for f in folders if not (f / "config.json").exists()]
    if not folders or missing:
        raise FileNotFoundError(f"no checkpoint folders with config.json found in {[str(p) for p in paths]}"
                                + (f" (missing: {missing})" if missing else ""))
    return folders


def run_emergence(checkpoints: list[str | Path], out: str | Path, data: str | None = None, probe_contexts: int = 8,
                  context_length: int = 128, metric: str = "top1", family: CurveFamily = EXP_LOG) -> Emergence:
    """``actlab stats emergence``: probe contexts from ``data`` (default: the demo corpus), per-layer magnitudes
    for every checkpoint, curve fits; writes ``emergence.json`` (+ the probe ``probe.safetensors``) and
    ``emergence.png`` into ``out``. Raises ValueError (after writing) when every layer's fit failed."""
    from actlab import load_model
    from actlab.artifact import atomic_write_json, folder_lock, save_tensors
    from actlab.stats.report import _docs, probe_contexts as make_probe

    if metric not in ("top1", "ratio"):
        raise ValueError(f"metric must be 'top1' or 'ratio'; got {metric!r}")
    folders = checkpoint_folders(checkpoints)
    tok_model = load_model(folders[-1])
    docs, src = _docs(data)
    ids, notes = make_probe(tok_model, docs, probe_contexts * context_length, context_length, 0, src)
    for n in notes:
        log.warning("%s", n)
    em = track_checkpoints(folders, ids, metric=metric, family=family)
    out = Path(out)
    with folder_lock(out, what="actlab stats emergence"):
        save_tensors(out / "probe.safetensors", {"input_ids": ids})
        atomic_write_json(out / "emergence.json", {"format_version": 1, "metric": metric, "notes": notes,
                                                   **asdict(em)})
        plot_emergence(em, out / "emergence.png", family)
    failed = {k: v["error"] for k, v in em.fits.items() if "error" in v}
    if failed and len(failed) == len(em.fits):
        first = next(iter(failed.values()))
        raise ValueError(f"every layer's curve fit failed over {len(em.steps)} checkpoints (layer 0: {first}); "
                         f"the measurements are in {out / 'emergence.json'}. The {len(family.names)}-parameter "
                         f"curve needs at least {len(family.names) + 1} checkpoints, spread over training")
    return em


def plot_emergence(em: Emergence, path: str | Path, family: CurveFamily = EXP_LOG) -> None:
    """PNG: per-layer top |h| over training steps with the fitted curves."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ys = np.asarray(em.top1)
    t = np.asarray(em.steps, dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4))
    tt = np.linspace(t.min(), t.max(), 200)
    for layer in range(ys.shape[1]):
        line, = ax.plot(t, ys[:, layer], "o", ms=3, label=f"layer {layer}")
        fit = em.fits.get(layer, {})
        if "params" in fit:
            ax.plot(tt, family.fn(tt, *[fit["params"][n] for n in family.names]), "-", color=line.get_color())
    ax.set_xlabel("training step")
    ax.set_ylabel("top |h| (median over probe sequences)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save_png(fig, path)


def _save_png(fig, path) -> None:
    import io

    from actlab.artifact import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
