import pytest
import torch


@pytest.fixture
def one_thread():
    """Small-matrix training loops run faster on one thread (and do not fight other processes for cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
