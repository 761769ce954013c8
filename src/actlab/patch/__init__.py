"""Causal patching: activation, attribution, path and subspace patching, the illusion check, causal graphs."""
from actlab.patch.activation import Cell, RowMaskPatch, activation_patch
from actlab.patch.common import KL, LogitDiff, Metric, PatchResult, Prob, PromptPairs, make_pairs

__all__ = ["activation_patch", "Cell", "RowMaskPatch", "KL", "LogitDiff", "Metric", "PatchResult", "Prob",
           "PromptPairs", "make_pairs"]
