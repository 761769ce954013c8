"""The demo corpus: real English prose that ships with every Python, so nothing is downloaded.

It joins the Python Language Reference topics (``pydoc_data.topics``, the text behind ``help('if')``) and the long
docstrings (>= 300 characters) of the standard library's modules, classes and functions. Both are Python
documentation under the PSF License Version 2 (https://docs.python.org/3/license.html). About 350k SmolLM2 tokens
on Python 3.11. Written once as JSON lines (``{"text", "source"}``) into ``cache_dir()/data``, atomically.
"""
from __future__ import annotations

import ast
import json
import logging
import sys
import sysconfig
from pathlib import Path

from actlab.utils import atomic_write_bytes, cache_dir

log = logging.getLogger(__name__)

LICENSE = "PSF License Version 2 (Python documentation and standard library docstrings)"
SKIP_PARTS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "pydoc_data", "ensurepip",
              "tkinter", "turtledemo", "__pycache__", "__phello__"}
MIN_DOC_CHARS = 300


def _topics() -> list[dict]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # stripped-down Pythons
        log.warning("pydoc_data is missing; the demo corpus holds only docstrings")
        return []
    return [{"text": topics[k].strip(), "source": f"pydoc_data.topics:{k}"} for k in sorted(topics)]


def _docstrings() -> list[dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if SKIP_PARTS.intersection(rel.parts) or p.name.startswith("test"):
            continue
        try:
            tree = ast.parse(p.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= MIN_DOC_CHARS:
                    name = getattr(node, "name", "<module>")
                    out.append({"text": doc.strip(), "source": f"{rel.as_posix()}:{name}"})
    return out


def demo_corpus() -> Path:
    """Path of the demo corpus (JSON lines, field ``text``), built on first use; >= 200k SmolLM2 tokens."""
    ver = f"py{sys.version_info.major}{sys.version_info.minor}"
    path = cache_dir() / "data" / f"demo-corpus-{ver}.jsonl"
    if path.exists():
        return path
    log.info("building the demo corpus at %s (first use only)", path)
    docs = _topics() + _docstrings()
    data = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    atomic_write_bytes(path, data)
    return path
