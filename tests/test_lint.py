"""The lint rules in pyproject.toml hold on the whole tree (pyflakes + syntax: unused imports, undefined names)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (it is in the dev extra)")
    return [exe]


def test_ruff_finds_nothing():
    r = subprocess.run([*_ruff(), "check", "--no-cache", "--quiet", "src", "tests", "bench"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_would_catch_an_unused_import(tmp_path):
    (tmp_path / "bad.py").write_text("import os\n")
    r = subprocess.run([*_ruff(), "check", "--no-cache", "--quiet", "--config", str(ROOT / "pyproject.toml"),
                        str(tmp_path / "bad.py")], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "F401" in r.stdout
