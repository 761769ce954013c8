"""Real images offline: scikit-learn's bundled handwritten digits (1,797 8x8 greyscale images, 10 classes) as tensors.

One loader for every vision fixture (feature visualization, backdoors, attribution tests): a deterministic stratified
train/test split, pixels scaled to [0, 1], optional bilinear upsampling where a method needs room.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: images per class in the bundled set is ~180; the default test share keeps ~36 per class
DEFAULT_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Digits:
    """Images ``x`` (N, 1, size, size) float32 in [0, 1] and labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


def load_digits(split: str = "train", size: int = 8, test_fraction: float = DEFAULT_TEST_FRACTION,
                seed: int = 0) -> Digits:
    """The ``split`` ("train", "test" or "all") of the digits, ``size`` x ``size`` pixels (8 = native).

    The split is stratified by class and fixed by ``seed``, so train and test never share an image.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if size < 8:
        raise ValueError(f"size must be >= 8 (the native 8x8 digits), got {size}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits as _sk_load  # bundled with scikit-learn: no download

    d = _sk_load()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    if split == "all":
        return Digits(x, y)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(d.target == c)
        test[rng.permutation(idx)[: max(1, round(len(idx) * test_fraction))]] = True
    keep = torch.from_numpy(test if split == "test" else ~test)
    return Digits(x[keep], y[keep])
