"""Adaptive mutual-information estimators for hidden layers (arXiv 1902.09037) and the information plane.

X is uniform over a finite dataset and the network deterministic, so ``I(X;T) = H(T)`` for a discretised T and
``I(T;Y) = H(T) - sum_y p(y) H(T|Y=y)``. All figures in bits.

* EBAB (entropy-based adaptive binning): pool the layer's values, take the sorted unique values, put bin edges at
  evenly spaced ranks of them (shared by all units); invariant to monotone rescaling.
* aKDE: Kolchinsky-Tracey pairwise-distance upper bound with a Gaussian kernel whose standard deviation is
  ``sigma_frac * max|T|`` (scale invariant).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

LOG2E = 1.0 / math.log(2.0)


def _entropy_of_rows(sym: torch.Tensor) -> float:
    """Entropy (bits) of the empirical distribution of the rows of an integer matrix."""
    if sym.shape[0] == 0:
        return 0.0
    _, counts = torch.unique(sym, dim=0, return_counts=True)
    p = counts.double() / sym.shape[0]
    return float(-(p * p.log2()).sum())


def ebab_bins(t: torch.Tensor, n_bins: int = 30) -> torch.Tensor:
    """Bin index of every entry of ``t`` ``[n, units]`` with edges at evenly spaced ranks of the layer's unique
    values (all units share the edges; with at most ``n_bins`` unique values each value is its own bin)."""
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2; got {n_bins}")
    u = torch.unique(t.detach().reshape(-1).double())
    x = t.detach().double()
    if len(u) <= n_bins:
        return torch.searchsorted(u, x.contiguous())
    idx = torch.linspace(0, len(u) - 1, n_bins + 1, dtype=torch.float64).round().long()
    inner = u[idx[1:-1]].contiguous()
    return torch.bucketize(x.contiguous(), inner, right=True)


def _mi_of_symbols(sym: torch.Tensor, y) -> tuple[float, float | None]:
    """(H(T) = I(X;T) for a deterministic layer over equiprobable inputs, I(T;Y) or None) from binned rows."""
    h = _entropy_of_rows(sym)
    if y is None:
        return h, None
    y = torch.as_tensor(y).reshape(-1)
    h_cond = sum((y == c).double().mean().item() * _entropy_of_rows(sym[y == c]) for c in torch.unique(y))
    return h, h - h_cond


def ebab_mi(t: torch.Tensor, y: torch.Tensor | None = None, n_bins: int = 30) -> tuple[float, float | None]:
    """(I(X;T), I(T;Y)) in bits by adaptive binning; ``t`` ``[n, units]`` over n equiprobable inputs."""
    t = _check(t)
    sym = ebab_bins(t, n_bins)
    return _mi_of_symbols(sym, y)


def fixed_bin_mi(t: torch.Tensor, y: torch.Tensor | None = None, bin_width: float = 0.5) -> tuple[float, float | None]:
    """Baseline with fixed *absolute* bin width (not scale invariant): for comparison with EBAB."""
    t = _check(t)
    sym = torch.floor(t.double() / bin_width).long()
    return _mi_of_symbols(sym, y)


def _kde_term(t: torch.Tensor, sigma: float) -> float:
    """-mean_i log2 mean_j exp(-|t_i - t_j|^2 / (2 sigma^2)) (the pairwise-distance entropy term)."""
    t = t.float()
    tot = 0.0
    for s in range(0, t.shape[0], 1024):
        d2 = torch.cdist(t[s:s + 1024], t).pow(2)
        tot += float((torch.logsumexp(-d2 / (2 * sigma ** 2), dim=1) - math.log(t.shape[0])).sum())
    return -tot / t.shape[0] * LOG2E


def akde_mi(t: torch.Tensor, y: torch.Tensor | None = None, sigma_frac: float = 0.05) -> tuple[float, float | None]:
    """(I(X;T), I(T;Y)) in bits by adaptive KDE: kernel sd = ``sigma_frac * max|t|``; 0 for a constant layer."""
    t = _check(t).double()
    amax = float(t.abs().max())
    if amax == 0 or float(t.std(0).max()) == 0:
        return 0.0, (0.0 if y is not None else None)
    sigma = sigma_frac * amax
    h = _kde_term(t, sigma)
    if y is None:
        return h, None
    y = torch.as_tensor(y).reshape(-1)
    h_cond = sum((y == c).double().mean().item() * _kde_term(t[y == c], sigma) for c in torch.unique(y))
    return h, h - h_cond


def _check(t: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2:
        raise ValueError(f"layer activations must be [n_samples, units]; got shape {list(t.shape)}")
    return t


def twelve_bit_dataset(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """All 4,096 12-bit patterns (as 0/1 floats) and balanced binary labels from a fixed random linear rule
    (median split), standing in for the Shwartz-Ziv & Tishby task."""
    x = ((torch.arange(4096)[:, None] >> torch.arange(12)) & 1).float()
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(12, generator=g)
    s = (x - 0.5) @ w + 0.3 * torch.sin(3.0 * (x @ torch.randn(12, generator=g)))
    y = (s > s.median()).long()
    return x, y


ACTS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU, "softplus": torch.nn.Softplus,
        "swish": torch.nn.SiLU}


@dataclass
class InfoPlane:
    """I(X;T) and I(T;Y) per recorded epoch and layer (bits), for one estimator."""

    estimator: str
    epochs: list[int] = field(default_factory=list)
    ixt: list[list[float]] = field(default_factory=list)
    ity: list[list[float]] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)


def train_info_plane(activation: str = "tanh", widths: tuple[int, ...] = (10, 7, 5, 4, 3), epochs: int = 400,
                     n_records: int = 15, lr: float = 3e-3, weight_decay: float = 0.0, seed: int = 0,
                     estimators: tuple[str, ...] = ("ebab", "akde"), akde_samples: int = 1024) -> dict[str, InfoPlane]:
    """Train the 12-10-7-5-4-3-2 network on the 12-bit task (80% train, full batch, Adam) and estimate I(X;T),
    I(T;Y) of every hidden layer at log-spaced epochs: EBAB over all 4,096 inputs, aKDE over a fixed random
    subset of ``akde_samples`` inputs (its cost is quadratic; its estimates then saturate at log2 of that)."""
    if activation not in ACTS:
        raise ValueError(f"activation must be one of {sorted(ACTS)}; got {activation!r}")
    torch.manual_seed(seed)
    x, y = twelve_bit_dataset(seed)
    perm = torch.randperm(4096)
    tr = perm[: int(0.8 * 4096)]
    layers, dims = [], (12, *widths)
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [torch.nn.Linear(a, b), ACTS[activation]()]
    body = torch.nn.Sequential(*layers)
    head = torch.nn.Linear(dims[-1], 2)
    opt = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=lr, weight_decay=weight_decay)
    sub = torch.randperm(4096, generator=torch.Generator().manual_seed(seed))[:akde_samples]
    rec = sorted(set(np.unique(np.geomspace(1, epochs, n_records).astype(int)).tolist()))
    out = {e: InfoPlane(e) for e in estimators}
    for ep in range(1, epochs + 1):
        loss = torch.nn.functional.cross_entropy(head(body(x[tr])), y[tr])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ep in rec:
            with torch.no_grad():
                hs, h = [], x
                for mod in body:
                    h = mod(h)
                    if not isinstance(mod, torch.nn.Linear):
                        hs.append(h)
                acc = float((head(h)[tr].argmax(1) == y[tr]).float().mean())
            for e in estimators:
                if e == "ebab":
                    vals = [ebab_mi(t, y) for t in hs]
                else:
                    vals = [akde_mi(t[sub], y[sub]) for t in hs]
                out[e].epochs.append(ep)
                out[e].ixt.append([v[0] for v in vals])
                out[e].ity.append([v[1] for v in vals])
                out[e].train_acc.append(acc)
    return out


def run_info_plane(out, activation: str = "tanh", **kw) -> dict[str, InfoPlane]:
    """``actlab stats infoplane``: ``train_info_plane(activation, **kw)``, then ``infoplane.json`` and one
    ``infoplane_<estimator>.png`` per estimator in the (locked) folder ``out``."""
    from dataclasses import asdict
    from pathlib import Path

    from actlab.artifact import atomic_write_json, folder_lock

    res = train_info_plane(activation, **kw)
    out = Path(out)
    with folder_lock(out, what="actlab stats infoplane"):
        atomic_write_json(out / "infoplane.json", {"format_version": 1, "activation": activation,
                                                   **{k: asdict(v) for k, v in res.items()}})
        for k, v in res.items():
            plot_info_plane(v, out / f"infoplane_{k}.png")
    return res


def plot_info_plane(plane: InfoPlane, path) -> None:
    """PNG: I(X;T) vs I(T;Y), one trajectory per layer, colour = epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from actlab.stats.emergence import _save_png

    ixt, ity = np.asarray(plane.ixt), np.asarray(plane.ity)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for layer in range(ixt.shape[1]):
        ax.plot(ixt[:, layer], ity[:, layer], "-", color="0.7", lw=0.8)
        sc = ax.scatter(ixt[:, layer], ity[:, layer], c=np.log10(plane.epochs), cmap="viridis", s=14)
        ax.annotate(f"T{layer + 1}", (ixt[-1, layer], ity[-1, layer]), fontsize=7)
    fig.colorbar(sc, ax=ax, label="log10 epoch")
    ax.set_xlabel("I(X;T) [bits]")
    ax.set_ylabel("I(T;Y) [bits]")
    ax.set_title(f"information plane ({plane.estimator})")
    fig.tight_layout()
    _save_png(fig, path)
