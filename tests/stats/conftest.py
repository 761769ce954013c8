import re

import pytest


@pytest.fixture
def cli_error(capsys):
    """Run ``actlab`` with argv and return its error text; asserts a non-zero exit and that the text matches.
    Works with the top-level error policy (``error: ...`` on stderr, exit 2) and with a command's own
    ``SystemExit("error: ...")``."""
    from actlab.cli import main

    def run(argv, match):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(argv)
        text = (e.value.code if isinstance(e.value.code, str) else "") + capsys.readouterr().err
        assert e.value.code not in (0, None), text
        assert re.search(match, text), text
        return text

    return run


@pytest.fixture
def small_fs(tmpfs):
    """``mount(size)`` -> a folder on a real tmpfs of that size (the shared ``tmpfs`` fixture)."""
    return tmpfs
