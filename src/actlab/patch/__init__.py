"""Causal patching: activation, attribution, path and subspace patching, the illusion check, causal graphs."""
from actlab.patch.activation import Cell, RowMaskPatch, activation_patch
from actlab.patch.attribution import attribution_patch
from actlab.patch.causal_graph import CausalGraph, CausalGraphConfig, causal_graph, unit_ace
from actlab.patch.common import KL, LogitDiff, Metric, PatchResult, Prob, PromptPairs, answer_id, make_pairs
from actlab.patch.path import (attention_override, circuit_overlap, one_hot_pattern, path_patch, path_patch_prompts,
                               path_patch_sweep, top_components, uniform_pattern)
from actlab.patch.subspace import (IllusionReport, SubspacePatch, das, illusion_check, interchange_accuracy, lm_score,
                                   lm_target_loss, load_basis, readout_weight, rowspace_split, subspace_effect)
from actlab.patch.subspace_run import SubspaceReport, subspace_experiment

__all__ = ["activation_patch", "attribution_patch", "Cell", "RowMaskPatch", "KL", "LogitDiff", "Metric",
           "PatchResult", "Prob", "PromptPairs", "make_pairs", "path_patch", "path_patch_sweep", "attention_override",
           "one_hot_pattern", "uniform_pattern", "circuit_overlap", "top_components", "SubspacePatch",
           "subspace_effect", "das", "illusion_check", "interchange_accuracy", "IllusionReport", "rowspace_split",
           "readout_weight", "load_basis", "lm_score", "lm_target_loss", "causal_graph", "CausalGraph",
           "CausalGraphConfig", "unit_ace", "SubspaceReport", "subspace_experiment",
           "answer_id", "path_patch_prompts"]
