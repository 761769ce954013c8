"""Thread policy: passive OpenMP waiting only for the CLI and only before torch loads; threads by problem size."""
from __future__ import annotations

import os
import subprocess
import sys

from actlab.core import threads as T


def test_threads_by_problem_size(monkeypatch):
    assert T.threads_for(1e6, cores=8) == 1                       # small: one thread
    assert T.threads_for(T.SMALL_OP_FLOPS * 3, cores=8) == 3
    assert T.threads_for(1e12, cores=2) == 2                      # never more than the usable cores
    monkeypatch.setattr(os, "getloadavg", lambda: (16.0, 16.0, 16.0))
    assert T.usable_cores() == 1                                  # a saturated machine: one
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert T.threads_for(1e12) == 1                               # spinning workers on a busy box: one
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert T.threads_for(1e12) == T.all_cores()                   # sleeping workers: every core


def test_cli_detection():
    assert T.started_as_cli("/usr/local/bin/actlab")
    assert T.started_as_cli("/x/site-packages/actlab/__main__.py")
    assert not T.started_as_cli("/usr/bin/pytest") and not T.started_as_cli("ipython")


def _policy(argv_code: str, env_extra: dict | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | (env_extra or {})
    code = f"import sys; sys.argv[0] = {argv_code!r}; import os, actlab; print(os.environ.get('OMP_WAIT_POLICY'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_policy_set_for_the_cli_only_and_never_overrides():
    assert _policy("/usr/local/bin/actlab") == "PASSIVE"          # set before torch is imported
    assert _policy("script.py") == "None"                         # a library user's process is left alone
    assert _policy("/usr/local/bin/actlab", {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
