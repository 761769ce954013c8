"""Interventions during training and training dynamics (docs/train.md): the core's training-loop pieces re-exported
(``Schedule``, ``Scheduled``, ``FromSite``; ``model.intervene(..., grad=, schedule=)``), training-time clamps, the
checkpoint tracker and its metrics, linear probes, sparse connectivity (lottery-ticket IMP, prune-and-regrow), and the
recipes (induction clamps, concept-space trajectories, random teachers, SHARP replay, attention VAT/iVAT, LM
emergence)."""
from actlab.core.interventions import FromSite, Schedule, Scheduled
from actlab.train.clamps import (
    MeanClamp,
    PrevTokenPattern,
    ReferenceClamp,
    SubspaceClamp,
    ZeroClamp,
    previous_token_pattern,
)
from actlab.train.configs import (
    ConceptConfig,
    FewShotConfig,
    InductionConfig,
    LmEmergenceConfig,
    SharpConfig,
    TeacherConfig,
    VatConfig,
)
from actlab.train.metrics import (
    induction_metric,
    loss_metric,
    massive_metric,
    probe_metric,
    sparsity_metric,
    variance_metric,
)
from actlab.train.probe import interpolation_losses, linear_probe_accuracy
from actlab.train.sparse import (
    apply_masks,
    iterative_magnitude_pruning,
    magnitude_masks,
    mask_grads,
    prunable,
    prune_and_regrow,
    random_masks,
    sparsity_of,
)
from actlab.train.tracker import (
    CheckpointTracker,
    load_checkpoint,
    log_spaced_steps,
    read_metrics,
    save_checkpoint,
)

__all__ = [
    "CheckpointTracker",
    "ConceptConfig",
    "FewShotConfig",
    "FromSite",
    "InductionConfig",
    "LmEmergenceConfig",
    "MeanClamp",
    "PrevTokenPattern",
    "ReferenceClamp",
    "Schedule",
    "Scheduled",
    "SharpConfig",
    "SubspaceClamp",
    "TeacherConfig",
    "VatConfig",
    "ZeroClamp",
    "apply_masks",
    "induction_metric",
    "interpolation_losses",
    "iterative_magnitude_pruning",
    "linear_probe_accuracy",
    "load_checkpoint",
    "log_spaced_steps",
    "loss_metric",
    "magnitude_masks",
    "mask_grads",
    "massive_metric",
    "previous_token_pattern",
    "probe_metric",
    "prunable",
    "prune_and_regrow",
    "random_masks",
    "read_metrics",
    "run_recipe",
    "save_checkpoint",
    "sparsity_metric",
    "sparsity_of",
    "variance_metric",
]


def run_recipe(name: str, cfg):
    """Run one recipe by its CLI name with its config; returns the report dict."""
    from actlab.train.concepts import run_concepts
    from actlab.train.fewshot import run_fewshot
    from actlab.train.induction import run_induction
    from actlab.train.lm import run_lm_emergence
    from actlab.train.random_teacher import run_random_teacher
    from actlab.train.sharp import run_sharp
    from actlab.train.vat import run_vat

    recipes = {"induction": run_induction, "concepts": run_concepts, "random-teacher": run_random_teacher,
               "sharp": run_sharp, "vat": run_vat, "lm-emergence": run_lm_emergence,
               "fewshot": run_fewshot}
    if name not in recipes:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted(recipes)}")
    return recipes[name](cfg)
