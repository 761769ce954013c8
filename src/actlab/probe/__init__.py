"""Probes and latent monitors: linear probes (logistic, difference of means, LDA) on any site with cross-validated
AUROC and bootstrap intervals, saved as artifacts and applied as monitors during ``generate()``; Latent Guard
(harmfulness from instruction-token states), single-pair defection probes, the per-token hallucination detector with
cross-model transfer (PCA + Procrustes) and the neurofeedback paradigm (labels from the model's own projections;
reporting and control tasks)."""
from actlab.probe.acts import POSITIONS, probe_acts
from actlab.probe.defection import DefectionEval, contrast_probe, evaluate_defection
from actlab.probe.evaluate import ProbeEval, cross_validate, evaluate
from actlab.probe.guard_run import GuardConfig, default_guard_site, run_latent_guard
from actlab.probe.hallu_data import HalluSet, contradiction_set
from actlab.probe.hallucination import (
                                       LayerScan,
                                       scan_layers,
                                       span_positions,
                                       token_states,
                                       truthful_direction,
)
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
from actlab.probe.nf_data import NF_DATASETS, nf_sentences
from actlab.probe.nf_prompts import control_prompts, report_prompts, sample_context
from actlab.probe.nf_run import NFConfig, run_neurofeedback
from actlab.probe.nf_score import label_logprobs, sample_with_states, span_states
from actlab.probe.nf_tasks import (
                                       ControlPoint,
                                       NFSetup,
                                       ReportPoint,
                                       bootstrap_effect,
                                       nf_explicit,
                                       nf_implicit,
                                       nf_labels,
                                       nf_reporting,
                                       nf_setup,
                                       permutation_p,
                                       split_indices,
)
from actlab.probe.report import fmt, plot_roc, save_figure, write_report
from actlab.probe.run import ProbeConfig, eval_probe, monitor, train
from actlab.probe.transfer import SubspaceMap, fit_subspace_map, pca_basis, procrustes, transfer_probe

__all__ = [
                                       "JAILBREAK_TEMPLATES",
                                       "METHODS",
                                       "NF_DATASETS",
                                       "POSITIONS",
                                       "ControlPoint",
                                       "DefectionEval",
                                       "GuardConfig",
                                       "GuardEval",
                                       "HalluSet",
                                       "Interval",
                                       "LatentGuard",
                                       "LayerScan",
                                       "LinearProbe",
                                       "MonitorResult",
                                       "NFConfig",
                                       "NFSetup",
                                       "ProbeConfig",
                                       "ProbeEval",
                                       "ProbeMonitor",
                                       "ReportPoint",
                                       "SubspaceMap",
                                       "auroc",
                                       "balanced_accuracy",
                                       "bootstrap_auroc",
                                       "bootstrap_effect",
                                       "check_labels",
                                       "contradiction_set",
                                       "contrast_probe",
                                       "control_effect",
                                       "control_prompts",
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
                                       "fit_subspace_map",
                                       "fmt",
                                       "label_logprobs",
                                       "load_monitor",
                                       "lr_axis",
                                       "median_labels",
                                       "monitor",
                                       "monitor_generate",
                                       "monitor_sites",
                                       "nf_explicit",
                                       "nf_implicit",
                                       "nf_labels",
                                       "nf_reporting",
                                       "nf_sentences",
                                       "nf_setup",
                                       "pca_axes",
                                       "pca_basis",
                                       "permutation_p",
                                       "plot_roc",
                                       "probe_acts",
                                       "procrustes",
                                       "project",
                                       "report_prompts",
                                       "rewrite",
                                       "run_latent_guard",
                                       "run_neurofeedback",
                                       "sample_context",
                                       "sample_with_states",
                                       "save_figure",
                                       "scan_layers",
                                       "sentence_states",
                                       "span_positions",
                                       "span_states",
                                       "split_indices",
                                       "stratified_folds",
                                       "token_states",
                                       "train",
                                       "transfer_probe",
                                       "truthful_direction",
                                       "wilson",
                                       "write_report",
]
