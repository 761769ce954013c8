"""Activation statistics: massive activations (+ emergence over training), MLP sparsity and Top-k, quantization
outliers and calibration-set sensitivity, adaptive mutual-information estimators, variance explained per feature,
and the ``actlab stats`` report. See docs/stats.md; everything the docs use is importable from here."""
from actlab.stats.calibration import (Calibration, CalibrationRow, calibrate, calibration_study, linear_layers,
                                      perplexity, quantized)
from actlab.stats.collect import StatsCollector, collect, collect_from_store, make_collector
from actlab.stats.emergence import (EXP_LOG, CurveFamily, CurveFit, Emergence, checkpoint_step, exp_log_curve,
                                    fit_curve, plot_emergence, pythia_steps, run_emergence, track_checkpoints)
from actlab.stats.info import (InfoPlane, akde_mi, ebab_mi, fixed_bin_mi, plot_info_plane, run_info_plane,
                               train_info_plane, twelve_bit_dataset)
from actlab.stats.lazy import LazyRun, lazy_neuron_toy
from actlab.stats.massive import (AblationResult, LayerMassive, MassivePatch, ablation_test, attention_sink,
                                  detect_massive, mask_channels, massive_mask)
from actlab.stats.quant import ChannelStats, fake_quant, find_outliers, smooth, smoothquant_scales
from actlab.stats.report import Report, StatsConfig, run_stats
from actlab.stats.sparsity import SparsityStats, TopK, active_fraction, flop_savings
from actlab.stats.train_checkpoints import CheckpointSeriesConfig, checkpoint_steps, train_checkpoints, train_lm
from actlab.stats.variance import decoding_accuracy, feature_report, pc_alignment, variance_explained

__all__ = [
    "StatsConfig", "run_stats", "Report", "StatsCollector", "make_collector", "collect", "collect_from_store",
    "MassivePatch", "detect_massive", "massive_mask", "mask_channels", "LayerMassive", "ablation_test",
    "AblationResult", "attention_sink",
    "EXP_LOG", "CurveFamily", "CurveFit", "Emergence", "fit_curve", "exp_log_curve", "pythia_steps",
    "checkpoint_step", "track_checkpoints", "run_emergence", "plot_emergence", "CheckpointSeriesConfig",
    "train_checkpoints", "checkpoint_steps", "train_lm",
    "TopK", "active_fraction", "SparsityStats", "flop_savings", "LazyRun", "lazy_neuron_toy",
    "ChannelStats", "fake_quant", "find_outliers", "smoothquant_scales", "smooth", "Calibration", "CalibrationRow",
    "calibrate", "quantized", "perplexity", "calibration_study", "linear_layers",
    "InfoPlane", "ebab_mi", "akde_mi", "fixed_bin_mi", "train_info_plane", "run_info_plane", "plot_info_plane",
    "twelve_bit_dataset",
    "variance_explained", "feature_report", "pc_alignment", "decoding_accuracy",
]
