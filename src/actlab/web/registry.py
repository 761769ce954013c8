"""Find the artifacts inside the served folders (latent caches, dictionaries, stats reports, patch results, steering
directions, explanation files, attribution graph folders) and give each a short id. Requests name artifacts only by
these ids: no path from a request is ever joined to a folder here."""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actlab.web.paths import contained, resolve_root

log = logging.getLogger(__name__)
MAX_DEPTH = 4
MAX_JSON_BYTES = 64 << 20
# (file name, artifact kind) pairs that identify a folder's kind from its "artifact" block
KINDS = {"cfg.json": ("explain.latent_cache", "dictionary", "explain.explanations", "explain.scores"),
         "result.json": ("patch.result",),
         "direction.json": ("steer.direction",)}


@dataclass
class Entry:
    """One artifact: its id, kind, folder (resolved, inside ``root``), the served root's index and its config."""

    id: str
    kind: str
    folder: Path
    root: int
    rel: str
    config: dict = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "root": self.root, "path": self.rel}


def _read(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "root"


def explanation_records(data: Any) -> dict[int, dict]:
    """``{latent: {"explanation": str, "scores": {...}}}`` from the shapes an explanation file may have: a list of
    records (or JSON lines) with ``latent``/``index`` and ``explanation``/``description``, or a mapping
    ``{"latents": {j: {...}}}`` / ``{"explanations": {...}}``. Anything else gives ``{}`` (tolerated, not fatal)."""
    out: dict[int, dict] = {}
    if isinstance(data, dict):
        inner = data.get("latents", data.get("explanations", data.get("features")))
        if isinstance(inner, dict):
            data = [dict(v, latent=k) if isinstance(v, dict) else {"latent": k, "explanation": v}
                    for k, v in inner.items()]
        elif isinstance(inner, list):
            data = inner
        else:
            return out
    if not isinstance(data, list):
        return out
    for r in data:
        if not isinstance(r, dict):
            continue
        j = r.get("latent", r.get("index", r.get("feature")))
        text = r.get("explanation", r.get("description"))
        if isinstance(text, dict):
            text = text.get("text") or text.get("description")
        try:
            j = int(j)
        except (TypeError, ValueError):
            continue
        if not isinstance(text, str):
            continue
        scores = r.get("scores") if isinstance(r.get("scores"), dict) else {}
        out[j] = {"explanation": text, "scores": {k: v for k, v in scores.items()
                                                  if isinstance(v, (int, float, str, dict, list))}}
    return out


def _read_explanations(path: Path) -> dict[int, dict]:
    if path.suffix == ".jsonl":
        try:
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
        return explanation_records(lines)
    return explanation_records(_read(path))


class Registry:
    """The artifacts found under ``roots`` (each resolved once), by id and by kind."""

    def __init__(self, roots: list[str | Path]):
        if not roots:
            raise ValueError("give at least one folder to serve")
        self.roots = [resolve_root(r) for r in roots]
        self.entries: dict[str, Entry] = {}
        self.explanations: dict[Path, dict[int, dict]] = {}
        for i, root in enumerate(self.roots):
            self._scan(i, root)

    def _add(self, kind: str, folder: Path, i: int, config: dict) -> None:
        rel = folder.relative_to(self.roots[i]).as_posix()
        base = _slug(self.roots[i].name if rel == "." else f"{self.roots[i].name}-{rel}")
        eid, n = base, 2
        while eid in self.entries:
            eid, n = f"{base}-{n}", n + 1
        self.entries[eid] = Entry(eid, kind, folder, i, rel, config)

    def _scan(self, i: int, root: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            here = Path(dirpath)
            depth = len(here.relative_to(root).parts)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and depth < MAX_DEPTH
                                 and not (here / d).is_symlink())
            files = set(filenames)
            for name, kinds in KINDS.items():
                if name in files and not (here / name).is_symlink():
                    cfg = _read(here / name)
                    kind = ((cfg or {}).get("artifact") or {}).get("kind") if isinstance(cfg, dict) else None
                    if kind in kinds:
                        self._add(kind, here, i, cfg)
            if "graph-metadata.json" in files and not (here / "graph-metadata.json").is_symlink():
                cfg = _read(here / "graph-metadata.json")     # actlab circuits graph / circuit-tracer's index
                if isinstance(cfg, dict) and isinstance(cfg.get("graphs"), list):
                    self._add("circuits.graph", here, i, cfg)
            if "stats.json" in files and not (here / "stats.json").is_symlink():
                cfg = _read(here / "stats.json")
                if isinstance(cfg, dict) and "meta" in cfg and "massive" in cfg:
                    self._add("stats.report", here, i, cfg)
            for f in sorted(files):
                if re.match(r"(explanations|scores).*\.jsonl?$", f) and not (here / f).is_symlink():
                    recs = _read_explanations(here / f)
                    if recs:
                        self.explanations.setdefault(here, {}).update(
                            {j: {**self.explanations.get(here, {}).get(j, {}), **r} for j, r in recs.items()})

    # -- lookups ----------------------------------------------------------------------------------------
    def get(self, eid: str, kind: str | tuple[str, ...] | None = None) -> Entry:
        e = self.entries.get(eid)
        kinds = (kind,) if isinstance(kind, str) else kind
        if e is None or (kinds and e.kind not in kinds):
            known = sorted(k for k, v in self.entries.items() if not kinds or v.kind in kinds)
            raise KeyError(f"no {'/'.join(kinds) if kinds else 'artifact'} with id {eid!r}; known: {known[:20]}")
        return e

    def of_kind(self, kind: str) -> list[Entry]:
        return [e for e in self.entries.values() if e.kind == kind]

    def inside(self, path: str | Path) -> Path | None:
        """``path`` resolved, if it lies inside a served folder (else None: the server does not read it)."""
        try:
            p = Path(path).resolve()
        except (OSError, RuntimeError):
            return None
        return p if any(contained(r, p) for r in self.roots) else None

    def _records(self, e: Entry) -> list[dict]:
        from actlab.artifact import load_artifact

        try:
            return [r for r in load_artifact(e.folder, e.kind, tensors_file=None).records or [] if isinstance(r, dict)]
        except (OSError, ValueError) as err:   # a broken folder is reported, not fatal
            log.warning("skipping %s: %s", e.folder, err)
            return []

    def artifact_explanations(self, folder: Path) -> dict[int, dict]:
        """``explain.explanations`` / ``explain.scores`` folders (``actlab explain run|score``) made from the cache at
        ``folder``: the text per latent, and per scorer its headline value (``value``, else balanced accuracy)."""
        out: dict[int, dict] = {}
        for kind in ("explain.explanations", "explain.scores"):
            for e in self.of_kind(kind):
                if self.inside(e.config.get("cache") or "") != folder:
                    continue
                for r in self._records(e):
                    try:
                        j = int(r["latent"])
                    except (KeyError, TypeError, ValueError):
                        continue
                    d = out.setdefault(j, {"explanation": "", "scores": {}})
                    if kind == "explain.explanations" and isinstance(r.get("text"), str):
                        d["explanation"] = r["text"]
                    elif kind == "explain.scores":
                        v = r.get("value", r.get("balanced_accuracy"))
                        if isinstance(v, (int, float)):
                            d["scores"][str(r.get("scorer", "score"))] = v
        return out

    def explanations_for(self, folder: Path) -> dict[int, dict]:
        """Explanations of the cache at ``folder``: explain.explanations / explain.scores artifacts made from it, and
        explanation files in it, beside it or in a sub-folder (merged; the files win)."""
        out: dict[int, dict] = self.artifact_explanations(folder)
        for f in (folder.parent, folder):
            out.update(self.explanations.get(f, {}))
        for sub, recs in self.explanations.items():   # an explanations folder inside the cache's folder
            if sub.parent == folder:
                out.update(recs)
        return out

    def summary(self) -> dict[str, Any]:
        return {"roots": [r.name for r in self.roots],
                "artifacts": [e.summary() for e in self.entries.values()]}
