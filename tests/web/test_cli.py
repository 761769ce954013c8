"""`actlab serve` is registered with its flags, and `import actlab.web` pulls in neither FastAPI nor uvicorn (the web
extra is needed only to serve)."""
from __future__ import annotations

import subprocess
import sys


def test_import_is_lazy():
    code = ("import sys, actlab, actlab.web, actlab.web.cli; "
            "assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules, sorted(sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_serve_flags(capsys):
    import pytest

    from actlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--model", "--max-new-tokens", "--max-body-bytes", "--max-text-chars"):
        assert flag in out


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    import pytest

    from actlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", str(tmp_path / "nope")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
