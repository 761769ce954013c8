"""The configs of ``actlab viz`` runs (no torch here: the CLI derives its flags from these without loading it)."""
from __future__ import annotations

from dataclasses import dataclass

MODELS = ("digits-cnn", "digits-vit")
ROAR_METHODS = ("ig", "grad_x_input", "saliency", "smoothgrad", "layer_mask", "random", "oracle")


@dataclass
class ModelChoice:
    """Which trained vision model."""

    model: str = "digits-cnn"
    """digits-cnn or digits-vit (trained on the first use, then cached)."""
    cache: str | None = None
    """model cache folder (default $ACTLAB_VIZ_CACHE or ~/.cache/actlab/viz)."""

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"--model must be one of {MODELS}, got {self.model!r}")


@dataclass
class UnitChoice:
    """Which unit: a site and one of channel / neuron (site 'output' + neuron = a class logit)."""

    site: str = "output"
    """site: 'output' (the logits) or a module path like module:conv2."""
    channel: int | None = None
    """channel of a conv site (averaged over space)."""
    neuron: int | None = None
    """index into the flattened activation (for 'output': the class)."""

    def __post_init__(self) -> None:
        if (self.channel is None) == (self.neuron is None):
            raise ValueError("give exactly one of --channel or --neuron")


@dataclass
class MaximizeRun(ModelChoice, UnitChoice):
    """actlab viz maximize: activation maximisation of a unit."""

    n: int = 4
    """images (different random starts)."""
    steps: int = 128
    """gradient steps."""
    lr: float = 0.05
    """learning rate."""
    param: str = "fourier"
    """pixel or fourier."""
    jitter: int = 1
    """random translation in pixels."""
    scale: float = 0.05
    """random scaling range."""
    tv: float = 0.0
    """total-variation weight."""
    out: str = "viz_maximize"
    """output folder (PNG grid, index.html, result artifact)."""

    def __post_init__(self) -> None:
        ModelChoice.__post_init__(self)
        UnitChoice.__post_init__(self)
        if self.n < 1:
            raise ValueError(f"--n must be >= 1, got {self.n}")


@dataclass
class FacetsRun(ModelChoice, UnitChoice):
    """actlab viz facets: one visualization per facet of a unit."""

    n_facets: int = 4
    """facets (k of k-means)."""
    top: int = 100
    """top-activating training images clustered."""
    code_site: str | None = "module:conv3"
    """site whose activation embeds the images for clustering (None: pixels)."""
    steps: int = 96
    """maximisation steps per facet."""
    out: str = "viz_facets"
    """output folder."""

    def __post_init__(self) -> None:
        ModelChoice.__post_init__(self)
        UnitChoice.__post_init__(self)


@dataclass
class MdsRun(ModelChoice):
    """actlab viz mds: cluster the channels of a site by their most discriminative stimuli."""

    site: str = "module:conv3"
    """site whose channels (units) are clustered."""
    n_clusters: int = 6
    """initial clusters."""
    rounds: int = 10
    """most EM rounds."""
    steps: int = 60
    """stimulus steps per round."""
    out: str = "viz_mds"
    """output folder."""


@dataclass
class RoarRun:
    """actlab viz roar: DiffROAR and signal mass of attribution methods on BlockMNIST (from the digits)."""

    methods: str = "ig,grad_x_input,smoothgrad,layer_mask,random"
    """attribution methods, comma separated (ig, grad_x_input, saliency, smoothgrad, layer_mask, random, oracle)."""
    k: float = 0.2
    """fraction of pixels kept (top-k / bottom-k)."""
    n_train: int = 400
    """training images for the retrained models."""
    n_test: int = 200
    """test images."""
    epochs: int = 10
    """epochs of every (re)trained model."""
    out: str = "viz_roar"
    """output folder."""

    def __post_init__(self) -> None:
        bad = [m for m in self.methods.split(",") if m.strip() not in ROAR_METHODS]
        if bad:
            raise ValueError(f"unknown --methods {bad}; use {ROAR_METHODS}")
        if not 0 < self.k < 1:
            raise ValueError(f"--k must be in (0, 1), got {self.k}")


@dataclass
class TraverseRun(ModelChoice):
    """actlab viz traverse: level set traversal from a test image of one class toward one of another."""

    source: int = 0
    """index of the source image in the test split."""
    target: int = 1
    """index of the target image in the test split."""
    steps: int = 100
    """most steps."""
    eta: float = 0.1
    """fraction of the orthogonal remaining difference per step."""
    out: str = "viz_traverse"
    """output folder."""
