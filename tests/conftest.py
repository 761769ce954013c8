import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: tiny matmuls and training loops run faster (no OpenMP spin-waits)."""
    from actlab.utils import num_threads

    with num_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny():
    """Cached tiny models by name (seeded, deterministic)."""
    from actlab import load_model

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_model(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def smollm2():
    from actlab import load_model

    return load_model("smollm2-135m-instruct")
