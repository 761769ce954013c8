"""``actlab viz maximize|facets|mds|roar|traverse``: feature visualization and attribution tests on the bundled
digits models. Flags come from the run configs in ``actlab.viz.configs``; each verb writes PNG grids, an HTML gallery
(``index.html``) and a result artifact to ``--out``. This file only declares flags and calls ``actlab.viz.run``.
"""
from __future__ import annotations

import argparse

from actlab import clikit
from actlab.viz.configs import FacetsRun, MaximizeRun, MdsRun, RoarRun, TraverseRun

VERBS = {
    "maximize": (MaximizeRun, "activation maximisation of a channel / neuron / class logit"),
    "facets": (FacetsRun, "multifaceted visualization: one image per cluster of top-activating digits"),
    "mds": (MdsRun, "cluster a site's channels by their most discriminative stimuli"),
    "roar": (RoarRun, "DiffROAR and signal mass of attribution methods on BlockMNIST"),
    "traverse": (TraverseRun, "level set traversal between two test digits"),
}


def register(sub) -> None:
    p = sub.add_parser("viz", help="feature visualization, discriminative stimuli, attribution tests (vision)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = clikit.subcommands(p, dest="verb", metavar="VERB", required=True)
    for name, (cls, what) in VERBS.items():
        v = verbs.add_parser(name, help=what, description=cls.__doc__)
        clikit.add_config(v, cls)
        v.set_defaults(func=cmd, viz_verb=name)


def cmd(a) -> None:
    from actlab.viz import run

    print(getattr(run, f"run_{a.viz_verb}")(clikit.config_from_args(a)))
