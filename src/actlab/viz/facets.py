"""Multifaceted feature visualization (Nguyen, Yosinski & Clune 2016): one synthetic image per facet of a unit.

The unit's top-activating inputs are embedded (a hidden site's code, or the pixels), reduced with PCA (optionally
t-SNE to 2-D, seeded), clustered with k-means; activation maximisation then starts from each cluster's mean image.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from actlab.viz.maximize import MaximizeConfig, MaxResult, maximize
from actlab.viz.objectives import site_codes

if TYPE_CHECKING:
    from actlab.models import Model


@dataclass
class FacetsConfig:
    """How many inputs, facets and dimensions the clustering uses."""

    n_facets: int = 4
    """k of k-means (the paper uses 10)."""
    top: int = 100
    """top-activating inputs clustered."""
    pca_dims: int = 50
    """PCA dimensions before clustering (capped by the data)."""
    tsne: bool = False
    """cluster a seeded 2-D t-SNE of the PCA codes instead of the PCA codes themselves."""
    mean_init: bool = True
    """start each facet's maximisation from its cluster's mean image (off: from noise)."""
    seed: int = 0
    """seed of PCA/t-SNE/k-means."""

    def __post_init__(self) -> None:
        if self.n_facets < 1 or self.top < self.n_facets or self.pca_dims < 1:
            raise ValueError(f"need n_facets >= 1, top >= n_facets, pca_dims >= 1; got {self.n_facets}, "
                             f"{self.top}, {self.pca_dims}")


@dataclass
class Facets:
    """``top`` indices into the data, ``labels`` [top] facet per top input, ``means`` [k, ...] mean images,
    ``result`` the maximisation (one image per facet)."""

    top: torch.Tensor
    labels: torch.Tensor
    means: torch.Tensor
    result: MaxResult
    activations: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def diversity(self, codes: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
        """Mean pairwise L2 distance of the facet images (in ``codes`` space, default pixels)."""
        z = (codes or (lambda x: x.reshape(len(x), -1)))(self.result.images)
        return float(torch.pdist(z.float()).mean()) if len(z) > 1 else 0.0


def cluster_codes(codes: torch.Tensor, k: int, pca_dims: int = 50, tsne: bool = False, seed: int = 0) -> np.ndarray:
    """k-means labels of ``codes`` [n, d] after PCA (and optionally a 2-D t-SNE)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    z = codes.detach().double().cpu().numpy()
    dims = min(pca_dims, z.shape[0], z.shape[1])
    z = PCA(n_components=dims, random_state=seed).fit_transform(z)
    if tsne:
        from sklearn.manifold import TSNE

        z = TSNE(2, random_state=seed, perplexity=min(30.0, max(2.0, (len(z) - 1) / 3))).fit_transform(z)
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z)


def top_activating(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, top: int,
                   batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, values) of the ``top`` inputs of ``x`` with the largest ``f``."""
    with torch.no_grad():
        v = torch.cat([f(x[lo:lo + batch_size]).detach() for lo in range(0, len(x), batch_size)])
    vals, idx = v.topk(min(top, len(v)))
    return idx, vals


def multifaceted(model: Model | None, f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 cfg: FacetsConfig | None = None, *, code_site: str | None = None,
                 max_cfg: MaximizeConfig | None = None) -> Facets:
    """One visualization per facet of the unit ``f`` over the inputs ``x`` [N, C, H, W].

    ``code_site``: the hidden site whose activation embeds the inputs for clustering (the paper's fc7); None
    clusters pixels (``model`` may then be None)."""
    cfg = cfg or FacetsConfig()
    if code_site is not None and model is None:
        raise ValueError("code_site needs the model")
    idx, vals = top_activating(f, x, cfg.top)
    if len(idx) < cfg.n_facets:
        raise ValueError(f"{len(idx)} inputs cannot make {cfg.n_facets} facets")
    codes = site_codes(model, x[idx], code_site) if code_site is not None else x[idx].reshape(len(idx), -1)
    labels = torch.as_tensor(cluster_codes(codes, cfg.n_facets, cfg.pca_dims, cfg.tsne, cfg.seed))
    means = torch.stack([x[idx][labels == j].mean(0) for j in range(cfg.n_facets)])
    res = maximize(f, (cfg.n_facets, *x.shape[1:]), max_cfg, init=means if cfg.mean_init else None)
    return Facets(idx, labels, means, res, vals)
