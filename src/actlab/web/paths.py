"""The one gate between a request and the file system: a relative path is served only if, resolved (symlinks
followed), it stays inside one of the folders the server was given, is a regular file and has an allowed suffix."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

SERVED_SUFFIXES = frozenset({".png", ".svg", ".json", ".jsonl", ".md", ".txt"})


class Forbidden(PermissionError):
    """A request named a path outside the served folders (or a kind of file the server does not hand out)."""


def resolve_root(folder: str | Path) -> Path:
    """A served folder, resolved once at start-up; refuses what is not an existing directory."""
    p = Path(folder).expanduser().resolve()
    if not p.is_dir():
        raise FileNotFoundError(f"served folder {folder} does not exist or is not a directory")
    return p


def contained(root: Path, path: Path) -> bool:
    """True when ``path`` (already resolved) is ``root`` or lies under it."""
    return path == root or root in path.parents


def safe_file(root: Path, rel: str, suffixes: frozenset[str] = SERVED_SUFFIXES) -> Path:
    """The file ``rel`` names inside ``root`` (resolved), or Forbidden / FileNotFoundError.

    Absolute paths, ``..`` parts, NUL bytes and backslashes are refused before touching the disk; the resolved path
    (symlinks followed) must still be inside ``root``, so a symlink pointing out of the folder is refused too.
    """
    if not rel or "\x00" in rel or "\\" in rel:
        raise Forbidden(f"bad path {rel!r}")
    pp = PurePosixPath(rel)
    if pp.is_absolute() or rel.startswith("~") or any(part == ".." for part in pp.parts):
        raise Forbidden(f"path {rel!r} leaves the served folder")
    full = (root / pp).resolve()
    if not contained(root, full):
        raise Forbidden(f"path {rel!r} resolves outside the served folder")
    if full.suffix.lower() not in suffixes:
        raise Forbidden(f"files of type {full.suffix or '(none)'!r} are not served; allowed: {sorted(suffixes)}")
    if not full.is_file():
        raise FileNotFoundError(f"no file {rel!r} in the served folder")
    return full
