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
def small_fs(tmp_path):
    """``mount(size)`` -> a folder on a real tmpfs of that size (unmounted afterwards); skipped where this process
    may not mount (the disk-full tests need a real full filesystem, not a patched OSError)."""
    import shutil
    import subprocess

    mounted = []

    def mount(size: str):
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        folder = tmp_path / f"fs{len(mounted)}"
        folder.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {(r.stderr or r.stdout).strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for f in mounted:
        subprocess.run(["umount", str(f)], check=False)
