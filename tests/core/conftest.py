"""Fixtures shared by the core tests."""
from __future__ import annotations

import pytest

import actlab.core.hooks as hooks_mod


@pytest.fixture
def position_calls(monkeypatch) -> list:
    """The decode steps at which the core computed token positions (``hooks.info_from_shape`` calls), in order."""
    calls = []
    real = hooks_mod.info_from_shape

    def counting(shape, step):
        calls.append(step)
        return real(shape, step)
    monkeypatch.setattr(hooks_mod, "info_from_shape", counting)
    return calls
