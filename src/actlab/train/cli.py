"""``actlab train <recipe>``: the training-dynamics recipes (flags from their config dataclasses; the work is in
``actlab.train``): induction, fewshot, concepts, random-teacher, sharp, vat, lm-emergence."""
from __future__ import annotations

import argparse
import json

from actlab import clikit
from actlab.train.configs import (
    ConceptConfig,
    FewShotConfig,
    InductionConfig,
    LmEmergenceConfig,
    SharpConfig,
    TeacherConfig,
    VatConfig,
)

VERBS = {
    "induction": (InductionConfig, ("induction heads in a 2-layer attention-only transformer under clamps "
                                    "(none / identity / ideal previous-token / zero)")),
    "fewshot": (FewShotConfig, ("few-shot in-context classification of held-out digit classes (the induction paper's "
                                "Omniglot setting) under clamps (none / ideal previous-token / zero)")),
    "concepts": (ConceptConfig, "concept-space trajectories and hidden capabilities on the planted generator"),
    "random-teacher": (TeacherConfig, ("self-distillation from a random teacher: probe accuracy of teacher vs "
                                       "student, clustered vs random inputs")),
    "sharp": (SharpConfig, "hidden-activation replay (SHARP) for class-incremental digits"),
    "vat": (VatConfig, "virtual adversarial training on attention: keyword attention and entropy"),
    "lm-emergence": (LmEmergenceConfig, ("massive activations and MLP sparsity over the checkpoints of a small LM "
                                         "trained on the demo corpus")),
}


def register(sub) -> None:
    p = sub.add_parser("train", help="interventions during training and training-dynamics recipes",
                       description=__doc__)
    verbs = clikit.subcommands(p, dest="train_verb", metavar="RECIPE", required=True)
    for name, (cls, help_) in VERBS.items():
        v = verbs.add_parser(name, help=help_, description=help_)
        clikit.add_config(v, cls)
        v.set_defaults(func=main, recipe=name)


def main(a: argparse.Namespace) -> None:
    cfg = clikit.config_from_args(a)
    from actlab import train

    rep = train.run_recipe(a.recipe, cfg)
    summary = {k: rep[k] for k in ("checks", "onset", "mean", "fits") if k in rep}
    print(json.dumps(summary, indent=1, default=str))
    if getattr(cfg, "out", ""):
        print(f"wrote {cfg.out}")
