import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every test in this folder runs on one thread (fixture in tests/conftest.py)."""
