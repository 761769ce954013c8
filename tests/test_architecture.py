"""The layering as a test (DESIGN.md "Layering"), read from the source with ``ast``; a failure lists every violation
as ``file:line: what``.

Rules:
1. core/ imports no family and no internals of models/ (``actlab.models``' exported names only), nothing above it.
2. store/ and data/ (the layers under the families) import no family.
3. No package imports another package's non-public names: a name is public if the package's ``__init__`` exports it
   (its ``__all__``, or else its top-level names without a leading underscore).
4. Only core/ registers torch hooks (any ``register_*hook`` call: module forward/pre/backward hooks, tensor hooks,
   global module hooks).
5. Only artifact.py touches the safetensors library (``save_file``/``load_file``/``safe_open``/``save``/``load``:
   any import of ``safetensors``), with no exemption. Reading or writing the safetensors byte layout by hand (a
   header's ``data_offsets``) happens only in the activation store's own shard format, exempt precisely by file:
   store/writer.py (``encode_header`` + ``_save`` write a shard as raw bytes, then offsets and crc32s go into the
   manifest) and store/verify.py (checks header offsets against the manifest); see store/FORMAT.md. The store
   reads shards as raw bytes at those offsets (crc32 per piece), never through the safetensors library.
6. ``cli.py`` files hold no torch arithmetic: no torch import in any ``cli.py``.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "actlab"
HOOK_EXEMPT_DIR = "core"
SAFETENSORS_OWNER = "artifact.py"
RAW_SAFETENSORS_LAYOUT = {"store/writer.py", "store/verify.py"}   # the store's own shard format (rule 5)


@dataclass(frozen=True)
class Import:
    file: str        # relative to src/actlab
    line: int
    module: str      # absolute module imported from (``actlab.x.y``)
    name: str | None  # the imported name for ``from m import name``; None for ``import m``


def _rel(p: Path) -> str:
    return p.relative_to(SRC).as_posix()


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = ["actlab", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[Import]:
    """Every import in the file (top level, in functions, under TYPE_CHECKING), relative ones made absolute."""
    out = []
    pkg = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out += [Import(_rel(path), node.lineno, a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out += [Import(_rel(path), node.lineno, mod, a.name) for a in node.names]
    return out


def _package_of(rel: str) -> str | None:
    """The top-level actlab package a file belongs to (``steer``), or None for a top-level module."""
    parts = rel.split("/")
    return parts[0] if len(parts) > 1 else None


def _packages() -> list[str]:
    return sorted(p.parent.name for p in SRC.glob("*/__init__.py"))


@cache
def _exports(pkg: str) -> frozenset[str]:
    """Public names of ``actlab.<pkg>``: its ``__all__``, or its top-level names without a leading underscore."""
    tree = _tree(SRC / pkg / "__init__.py")
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return frozenset(ast.literal_eval(node.value))
        if isinstance(node, ast.ImportFrom):
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return frozenset(n for n in names if not n.startswith("_"))


def _target_package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "actlab" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in _packages() else None


def _is_public(imp: Import) -> bool:
    """``from actlab.pkg[.sub] import Name`` with Name exported by actlab.pkg; ``import actlab.pkg`` itself."""
    pkg = _target_package(imp.module)
    if imp.name is None:
        return imp.module == f"actlab.{pkg}"
    if imp.module == "actlab":
        return True
    return imp.name in _exports(pkg)


def _hook_calls(path: Path) -> list[tuple[int, str]]:
    """(line, attribute) of every ``.register_*hook`` reference in the file."""
    return [(n.lineno, n.attr) for n in ast.walk(_tree(path))
            if isinstance(n, ast.Attribute) and n.attr.startswith("register_") and n.attr.endswith("hook")]


def _imports_of(path: Path, top: str) -> list[Import]:
    """Imports of the top-level package ``top`` (``torch``, ``safetensors``) anywhere in the file."""
    return [i for i in _imports(path) if i.module.split(".")[0] == top]


def _report(violations: list[str], rule: str) -> None:
    if violations:
        pytest.fail(f"{rule}: {len(violations)} violation(s)\n" + "\n".join(f"  src/actlab/{v}" for v in violations),
                    pytrace=False)


# -- 1, 2: the lower layers know no family ------------------------------------------------------------------------
def test_core_imports_no_family_and_no_models_internals():
    bad = []
    for f in _files():
        if _package_of(_rel(f)) != "core":
            continue
        for imp in _imports(f):
            pkg = _target_package(imp.module)
            top = imp.module.split(".")
            if top[0] != "actlab":
                continue
            if pkg == "core" or imp.module in ("actlab.artifact", "actlab.utils"):
                continue
            if pkg == "models" and _is_public(imp):
                continue
            what = f"models internal {imp.module}.{imp.name or ''}".rstrip(".") if pkg == "models" else \
                f"{imp.module}{'.' + imp.name if imp.name else ''}"
            bad.append(f"{imp.file}:{imp.line}: core imports {what}")
    _report(bad, "core imports no family and not models' internals")


def test_store_and_data_import_no_family():
    allowed = {"store": {"store", "data", "models", "core"}, "data": {"data", "models", "core"}}
    bad = []
    for f in _files():
        own = _package_of(_rel(f))
        if own not in allowed:
            continue
        for imp in _imports(f):
            pkg = _target_package(imp.module)
            if pkg is not None and pkg not in allowed[own]:
                bad.append(f"{imp.file}:{imp.line}: {own} imports the family {imp.module}")
    _report(bad, "store and data import no family")


# -- 3: public names only across packages ----------------------------------------------------------------------------
def test_no_package_imports_another_packages_non_public_names():
    bad = []
    for f in _files():
        own = _package_of(_rel(f))
        for imp in _imports(f):
            pkg = _target_package(imp.module)
            if pkg is None or pkg == own or _is_public(imp):
                continue
            name = f"{imp.module}.{imp.name}" if imp.name else imp.module
            bad.append(f"{imp.file}:{imp.line}: imports {name}, not exported by actlab.{pkg}/__init__.py")
    _report(bad, "no package imports another package's non-public names")


# -- 4: hooks only in core --------------------------------------------------------------------------------------------
def test_only_core_registers_torch_hooks():
    bad = []
    for f in _files():
        rel = _rel(f)
        if _package_of(rel) == HOOK_EXEMPT_DIR:
            continue
        for line, attr in _hook_calls(f):
            bad.append(f"{rel}:{line}: .{attr}(...) outside core/ (use model.hooks / model.module_hook / "
                       f"model.recording)")
    _report(bad, "only core/ registers torch hooks")


# -- 5: safetensors only in artifact.py -------------------------------------------------------------------------------
def test_only_artifact_touches_safetensors():
    bad = []
    for f in _files():
        rel = _rel(f)
        if rel == SAFETENSORS_OWNER:
            continue
        for imp in _imports_of(f, "safetensors"):
            what = f"{imp.module}.{imp.name}" if imp.name else imp.module
            bad.append(f"{rel}:{imp.line}: imports {what} (use actlab.artifact: save_tensors/load_tensors/"
                       f"save_artifact/load_artifact)")
    _report(bad, "only artifact.py touches safetensors")


def test_raw_safetensors_layout_only_in_artifact_and_the_store_shard_format():
    bad = []
    for f in _files():
        rel = _rel(f)
        if rel in RAW_SAFETENSORS_LAYOUT:
            continue
        for node in ast.walk(_tree(f)):
            if isinstance(node, ast.Constant) and node.value == "data_offsets":
                bad.append(f"{rel}:{node.lineno}: handles safetensors header bytes ('data_offsets') by hand")
    _report(bad, "raw safetensors layout only in artifact.py and store/ shard files")


def test_store_exemption_is_still_needed():
    """The store's exemption documents what it does; if the store stops handling raw headers, drop the exemption."""
    for rel in RAW_SAFETENSORS_LAYOUT:
        consts = [n for n in ast.walk(_tree(SRC / rel)) if isinstance(n, ast.Constant) and n.value == "data_offsets"]
        assert consts, f"{rel} no longer handles safetensors headers: narrow the exemption"


# -- 6: cli.py files parse and call --------------------------------------------------------------------------------
def test_cli_files_import_no_torch():
    bad = []
    for f in _files():
        if f.name != "cli.py":
            continue
        for imp in _imports_of(f, "torch"):
            bad.append(f"{imp.file}:{imp.line}: imports {imp.module} (a cli.py only parses and calls the "
                       f"library; move the arithmetic into a library function)")
    _report(bad, "cli.py files hold no torch arithmetic")


# -- the checker itself -------------------------------------------------------------------------------------------
def test_checker_sees_what_it_must():
    """Guard against a rule that cannot fail: the checks find known constructs in this very checkout."""
    assert {"core", "models", "steer", "store"} <= set(_packages())
    hooks = [i for i in _imports(SRC / "core" / "hooks.py") if i.module.startswith("actlab.core")]
    assert hooks, "relative/absolute import resolution broke"
    assert "Model" in _exports("models") and "load_model" in _exports("models")
    fake = Import("steer/x.py", 1, "actlab.dictionary.trainer", "_private_helper")
    assert not _is_public(fake) and _is_public(Import("steer/x.py", 1, "actlab.dictionary", "Dictionary"))
    assert len(_hook_calls(SRC / "core" / "hooks.py")) >= 2          # the engine's own hooks are seen
    lazy = _imports_of(SRC / "artifact.py", "safetensors")               # imports inside functions are seen
    assert {i.name for i in lazy} >= {"save_file", "safe_open"}
    assert _imports_of(SRC / "artifact.py", "torch")                   # incl. the lazy `import torch` lines
    assert _imports_of(SRC / "models" / "model.py", "torch")
