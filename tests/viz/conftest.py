"""Session fixtures of the viz tests: the digits CNN (and ViT) trained once into a temporary cache."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def viz_cache(tmp_path_factory):
    """A fresh model cache per session ($ACTLAB_VIZ_TEST_CACHE reuses one across runs, e.g. for mutation runs)."""
    import os
    from pathlib import Path

    keep = os.environ.get("ACTLAB_VIZ_TEST_CACHE")
    return Path(keep) if keep else tmp_path_factory.mktemp("viz_cache")


@pytest.fixture(scope="session")
def digits_cnn(viz_cache):
    from actlab.utils import num_threads
    from actlab.viz import digits_model

    with num_threads(1):
        return digits_model("cnn", cache=viz_cache)


@pytest.fixture(scope="session")
def digits_vit(viz_cache):
    from actlab.utils import num_threads
    from actlab.viz import VisionConfig, digits_model

    with num_threads(1):  # fewer epochs than the default keeps the session fast; accuracy still > 0.85
        return digits_model("vit", VisionConfig(arch="vit", epochs=6), cache=viz_cache)


@pytest.fixture(scope="session")
def digits16():
    from actlab.data import load_digits

    return load_digits("train", size=16), load_digits("test", size=16)

