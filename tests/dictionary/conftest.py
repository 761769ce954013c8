import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny problems run far faster on one thread, especially on a shared machine (OpenMP spin-waits)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
