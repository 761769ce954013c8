import json
import random

import pytest


def make_corpus(path, n_docs=150, seed=0):
    rng = random.Random(seed)
    words = "the cat sat on a mat while dogs ran over hills and rivers under bright skies".split()
    with open(path, "w") as f:
        for i in range(n_docs):
            f.write(json.dumps({"text": f"doc {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(5, 60)))})
                    + "\n")
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("data") / "docs.jsonl")


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test in this folder runs on one thread (fixture in tests/conftest.py)."""
