"""The docs of stats/store/data import only from the family packages, and every name they import exists there."""
import importlib
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_docs_import_from_the_family_packages():
    seen = 0
    for doc in ("stats.md", "store.md"):
        text = (DOCS / doc).read_text()
        assert not re.findall(r"actlab\.(?:stats|store|data)\.[a-z_]+\.", text), doc   # no submodule paths
        for mod, names in re.findall(r"from (actlab\.(?:stats|store|data)) import ([\w, ]+)", text):
            pkg = importlib.import_module(mod)
            for n in (x.strip() for x in names.split(",")):
                assert n in pkg.__all__, f"{doc}: {mod} does not export {n}"
                seen += 1
    assert seen >= 8
    import actlab.stats as S
    for name in ("run_emergence", "lazy_neuron_toy", "CheckpointSeriesConfig", "collect_from_store",
                 "run_info_plane", "variance_explained", "TopK", "fit_curve", "CurveFamily"):
        assert name in S.__all__ and hasattr(S, name)
