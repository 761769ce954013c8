"""Activation statistics: massive activations (+ emergence over training), MLP sparsity and Top-k, quantization
outliers and calibration-set sensitivity, adaptive mutual-information estimators, variance explained per feature,
and the ``actlab stats`` report. See docs/stats.md."""
from actlab.stats.massive import MassivePatch, detect_massive, massive_mask, mask_channels
from actlab.stats.sparsity import TopK, active_fraction
from actlab.stats.quant import ChannelStats, fake_quant, find_outliers, smoothquant_scales

__all__ = ["MassivePatch", "detect_massive", "massive_mask", "mask_channels", "TopK", "active_fraction",
           "ChannelStats", "fake_quant", "find_outliers", "smoothquant_scales"]
