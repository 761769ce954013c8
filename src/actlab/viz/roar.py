"""Testing attributions (Shah, Jain & Netrapalli 2021): DiffROAR, BlockMNIST built from the digits, and the paper's
synthetic ``RandomSignalCoordinate`` data.

DiffROAR(k) = Acc(top-k) - Acc(bottom-k): keep each input's top (bottom) k% features by attribution magnitude, mask
the rest with 0 (identically at train and test time), retrain a fresh model on each masked training set and evaluate
on the matching masked test set. BlockMNIST stacks a digit block (the only signal) and a fixed null block in random
order; the signal-mass metric is the fraction of attribution mass on the signal block.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from actlab.viz.vision import accuracy, fit_classifier

if TYPE_CHECKING:
    from actlab.models import Model

METHODS = ("ig", "grad_x_input", "saliency", "smoothgrad", "layer_mask", "random", "oracle")


@dataclass
class Dataset:
    """Inputs ``x`` [n, ...], labels ``y`` [n], and ``signal`` (bool, x's shape without channels: where the
    discriminative features are, per instance)."""

    x: torch.Tensor
    y: torch.Tensor
    signal: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: torch.Tensor) -> Dataset:
        return Dataset(self.x[idx], self.y[idx], self.signal[idx])


def random_signal_data(n: int, d: int = 50, s: int = 3, c: float = 1.0, seed: int = 0) -> Dataset:
    """The paper's ``RandomSignalCoordinate``: label y in {-1, +1} (returned as 0/1), ``s`` random coordinates per
    instance carry ``y * c``, the other ``d - s`` are 0."""
    if not 0 < s <= d:
        raise ValueError(f"need 0 < s <= d; got s={s}, d={d}")
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    sign = (2 * y - 1).float()
    idx = torch.rand(n, d, generator=g).argsort(1)[:, :s]
    signal = torch.zeros(n, d, dtype=torch.bool).scatter_(1, idx, True)
    return Dataset(signal.float() * sign[:, None] * c, y, signal)


def null_block(size: int = 8) -> torch.Tensor:
    """The fixed non-discriminative pattern: a centred cross of half intensity, ``[1, size, size]``."""
    b = torch.zeros(1, size, size)
    mid = size // 2
    b[:, mid - 1:mid + 1, 1:-1] = 0.5
    b[:, 1:-1, mid - 1:mid + 1] = 0.5
    return b


def block_digits(split: str = "train", seed: int = 0, classes: tuple[int, ...] | None = None) -> Dataset:
    """BlockMNIST from the 8x8 digits: ``[n, 1, 16, 8]`` images, the digit block above or below (random per image,
    fixed by ``seed``) the null block; ``signal`` marks the digit block. ``classes`` keeps only those digits
    (relabelled 0..len-1)."""
    from actlab.data import load_digits

    d = load_digits(split)
    x, y = d.x, d.y
    if classes is not None:
        keep = torch.isin(y, torch.tensor(classes))
        x, y = x[keep], torch.searchsorted(torch.tensor(sorted(classes)), y[keep])
    top = torch.rand(len(y), generator=torch.Generator().manual_seed(seed)) < 0.5
    null = null_block(8).expand(len(y), 1, 8, 8)
    img = torch.where(top.view(-1, 1, 1, 1), torch.cat([x, null], 2), torch.cat([null, x], 2))
    sig = torch.zeros(len(y), 16, 8, dtype=torch.bool)
    sig[top, :8] = True
    sig[~top, 8:] = True
    return Dataset(img.contiguous(), y, sig)


# -- attributions ------------------------------------------------------------------------------------------------
def attribution_scores(model: Model | None, data: Dataset, method: str, *, seed: int = 0, ig_steps: int = 32,
                       smooth_samples: int = 16, grid: int = 4, target: Callable | None = None) -> torch.Tensor:
    """Per-feature scores (the signal's shape) for every input: actlab.attribute's IG, grad x input, saliency,
    SmoothGrad, layer-masking occlusion (``grid`` x ``grid`` cells removed one at a time), or ``random`` / ``oracle``
    (the true signal). Ranked by magnitude downstream; the target is each input's true class."""
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; use one of {METHODS}")
    shape = data.signal.shape
    if method == "random":
        return torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    if method == "oracle":
        return data.signal.float()
    if model is None:
        raise ValueError(f"method {method!r} needs the model")
    from actlab.attribute import (
        class_target,
        gradient_attribution,
        grid_segments,
        integrated_gradients,
        masked_predictor,
    )

    out = torch.empty(shape)
    for i in range(len(data)):
        x, t = data.x[i:i + 1], target or class_target(int(data.y[i]))
        if method == "ig":
            a = integrated_gradients(model, x, t, steps=ig_steps, rule="gausslegendre").scores
        elif method == "layer_mask":
            seg = grid_segments(*x.shape[-2:], grid)
            n = int(seg.max()) + 1
            masks = (seg[None] != torch.arange(n).view(-1, 1, 1)).float()
            f = masked_predictor(model, t, "layer")
            drop = f(x, torch.ones(1, *x.shape[-2:])) - f(x, masks)        # [n] effect of removing each cell
            a = drop[seg]
        else:
            a = gradient_attribution(model, x, t, method=method, n_samples=smooth_samples, seed=seed + i).scores
        out[i] = a.reshape(shape[1:])
    return out


def signal_mass(scores: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
    """Per input, the fraction of ``|scores|`` mass on the signal features (1.0 oracle; ~ signal share if random)."""
    a = scores.abs().flatten(1)
    return (a * signal.flatten(1)).sum(1) / a.sum(1).clamp_min(1e-12)


def keep_mask(scores: torch.Tensor, k: float, top: bool = True, seed: int = 0) -> torch.Tensor:
    """Bool mask keeping each input's top (or bottom) ``ceil(k * features)`` features by ``|score|`` (ties broken at
    random, seeded)."""
    if not 0 < k < 1:
        raise ValueError(f"k is a fraction in (0, 1), got {k}")
    a = scores.abs().flatten(1).double()
    a = a + 1e-9 * a.amax(1, keepdim=True).clamp_min(1e-12) * torch.rand(a.shape, generator=torch.Generator()
                                                                            .manual_seed(seed), dtype=a.dtype)
    n = math.ceil(k * a.shape[1])
    idx = a.topk(n, dim=1, largest=top).indices
    return torch.zeros_like(a, dtype=torch.bool).scatter_(1, idx, True).view(scores.shape)


def apply_mask(x: torch.Tensor, keep: torch.Tensor, baseline: float = 0.0) -> torch.Tensor:
    """``x`` with the features outside ``keep`` set to ``baseline`` (``keep`` broadcast over channels)."""
    m = keep.unsqueeze(1) if x.dim() == keep.dim() + 1 else keep
    return torch.where(m, x, torch.full_like(x, baseline))


@dataclass
class RoarResult:
    """``top`` / ``bottom``: accuracies of fresh models on top-k / bottom-k data; ``diff`` = top - bottom."""

    k: float
    top: float
    bottom: float

    @property
    def diff(self) -> float:
        return self.top - self.bottom


def diffroar(make_model: Callable[[], torch.nn.Module], train: Dataset, test: Dataset, s_train: torch.Tensor,
             s_test: torch.Tensor, k: float, *, epochs: int = 10, lr: float = 3e-3, batch_size: int = 64,
             seed: int = 0) -> RoarResult:
    """DiffROAR at level ``k`` for the attribution scores ``s_train`` / ``s_test`` (computed with the original
    model): a fresh ``make_model()`` is trained on each masked training set (seeded)."""
    if s_train.shape != train.signal.shape or s_test.shape != test.signal.shape:
        raise ValueError(f"scores must have the signal's shape: got {list(s_train.shape)} / {list(s_test.shape)}, "
                         f"expected {list(train.signal.shape)} / {list(test.signal.shape)}")
    accs = []
    for top in (True, False):
        xtr = apply_mask(train.x, keep_mask(s_train, k, top, seed))
        xte = apply_mask(test.x, keep_mask(s_test, k, top, seed + 1))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = fit_classifier(make_model(), xtr, train.y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        accs.append(accuracy(net, xte, test.y))
    return RoarResult(k, accs[0], accs[1])


def mlp(d: int, hidden: int = 64, n_classes: int = 2) -> torch.nn.Module:
    """The one-hidden-layer MLP of the paper's theory."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, n_classes))
