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
def one_thread():
    """Tiny matmuls on a shared, loaded machine: 1 intra-op thread avoids oversubscription stalls."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
