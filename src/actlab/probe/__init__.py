"""Probes and latent monitors: linear probes (logistic, difference of means, LDA) on any site with cross-validated
AUROC and bootstrap intervals, saved as artifacts and applied as monitors during ``generate()``; Latent Guard
(harmfulness from instruction-token states) and single-pair defection probes."""
from actlab.probe.acts import POSITIONS, probe_acts
from actlab.probe.defection import DefectionEval, contrast_probe, evaluate_defection
from actlab.probe.evaluate import ProbeEval, cross_validate, evaluate
from actlab.probe.guard_run import GuardConfig, default_guard_site, run_latent_guard
from actlab.probe.latent_guard import (
                                       JAILBREAK_TEMPLATES,
                                       GuardEval,
                                       LatentGuard,
                                       evaluate_guard,
                                       fit_latent_guard,
                                       rewrite,
)
from actlab.probe.linear import METHODS, LinearProbe, fit_lda, fit_logistic, fit_mean_diff, fit_probe
from actlab.probe.metrics import (
                                       Interval,
                                       auroc,
                                       balanced_accuracy,
                                       bootstrap_auroc,
                                       check_labels,
                                       stratified_folds,
                                       wilson,
)
from actlab.probe.monitor import MonitorResult, ProbeMonitor, load_monitor, monitor_generate, monitor_sites
from actlab.probe.neurofeedback import (
                                       control_effect,
                                       effect_size,
                                       lr_axis,
                                       median_labels,
                                       pca_axes,
                                       project,
                                       sentence_states,
)
from actlab.probe.report import fmt, plot_roc, save_figure, write_report
from actlab.probe.run import ProbeConfig, eval_probe, monitor, train

__all__ = [
                                       "JAILBREAK_TEMPLATES",
                                       "METHODS",
                                       "POSITIONS",
                                       "DefectionEval",
                                       "GuardConfig",
                                       "GuardEval",
                                       "Interval",
                                       "LatentGuard",
                                       "LinearProbe",
                                       "MonitorResult",
                                       "ProbeConfig",
                                       "ProbeEval",
                                       "ProbeMonitor",
                                       "auroc",
                                       "balanced_accuracy",
                                       "bootstrap_auroc",
                                       "check_labels",
                                       "contrast_probe",
                                       "control_effect",
                                       "cross_validate",
                                       "default_guard_site",
                                       "effect_size",
                                       "eval_probe",
                                       "evaluate",
                                       "evaluate_defection",
                                       "evaluate_guard",
                                       "fit_latent_guard",
                                       "fit_lda",
                                       "fit_logistic",
                                       "fit_mean_diff",
                                       "fit_probe",
                                       "fmt",
                                       "load_monitor",
                                       "lr_axis",
                                       "median_labels",
                                       "monitor",
                                       "monitor_generate",
                                       "monitor_sites",
                                       "pca_axes",
                                       "plot_roc",
                                       "probe_acts",
                                       "project",
                                       "rewrite",
                                       "run_latent_guard",
                                       "save_figure",
                                       "sentence_states",
                                       "stratified_folds",
                                       "train",
                                       "wilson",
                                       "write_report",
]
