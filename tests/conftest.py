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


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size)`` -> a folder on a real tmpfs of that size (e.g. "64k"), unmounted afterwards (lazily if a file
    is still open); skipped where this process may not mount. Disk-full tests need a real full filesystem, not a
    patched OSError."""
    import shutil
    import subprocess

    mounted = []

    def mount(size: str):
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {(r.stderr or r.stdout).strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for f in mounted:
        if subprocess.run(["umount", str(f)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(f)], capture_output=True)


def randomize(m, seed: int = 1):
    """Every bias random and every norm gain away from 1: HF's zero biases / unit gains would hide a dropped bias
    or a dropped norm scale in an attribution or a replacement model."""
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
    """``biased(name)``: a tiny model by name with random biases and norm gains (one per name and test module)."""
    from actlab import load_model

    cache = {}
    return lambda name: cache[name] if name in cache else cache.setdefault(name, randomize(load_model(name)))
