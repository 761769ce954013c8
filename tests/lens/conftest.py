import pytest
import torch

CAUSAL = ["tiny-gpt2", "tiny-llama", "tiny-mixtral", "tiny-neox"]
TEXTS = ["The cat sat on the mat", "hi", "Lenses read the residual stream out"]


def randomize(m, seed: int = 1):
    """Every bias random and every norm gain away from 1: HF's zero biases / unit gains would hide a dropped bias
    or a dropped norm scale in an attribution."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in m.module.named_parameters():
            if n.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif "norm" in n or n.split(".")[-2].startswith("ln") or "layernorm" in n:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.3)
    return m


@pytest.fixture(scope="module")
def biased():
    from actlab import load_model

    cache = {}
    return lambda name: cache[name] if name in cache else cache.setdefault(name, randomize(load_model(name)))
