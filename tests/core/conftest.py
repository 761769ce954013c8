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


def hooks_on(module) -> int:
    """Torch hooks plus site-handler chains (a wrapped ``forward``) on ``module`` and its children: what the
    engine must leave as it found."""
    return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) + ("forward" in x.__dict__) for x in module.modules())


@pytest.fixture
def n_hooks():
    """``n_hooks(module)``: see ``hooks_on``."""
    return hooks_on
