"""Reading steering inputs from files (prompt lists, contrast pairs) and naming layer sites, for the CLI and for
Python users alike; every error names the file (and line) and what was expected."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actlab.models import Model


def read_prompts(path: str | os.PathLike, what: str = "prompts") -> list:
    """Prompts from a ``.txt`` (one per non-blank line), ``.json`` (a list, or an object with ``instructions`` or
    ``prompts``) or ``.jsonl`` file (one JSON value per line)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {p} does not exist" if not p.exists() else f"{what}: {p} is not a file")
    if p.suffix == ".json":
        from actlab.artifact import read_json

        data = read_json(p, what=what)
        if isinstance(data, dict):
            data = data.get("instructions", data.get("prompts"))
        if not isinstance(data, list):
            raise ValueError(f"{what} file {p} must hold a JSON list (or an object with 'instructions' or 'prompts')")
        return data
    if p.suffix == ".jsonl":
        out = []
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise ValueError(f"{what} file {p} is not UTF-8 text (byte {e.start})") from None
        for i, line in enumerate(lines, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{what} file {p} line {i}: invalid JSON ({e.msg} at column {e.colno})") from None
        return out
    from actlab.data import load_texts

    return load_texts(p, txt_mode="lines")


def read_contrast(pairs: str | os.PathLike | None = None, positive: str | os.PathLike | None = None,
                  negative: str | os.PathLike | None = None) -> tuple[list, list]:
    """(positive, negative) examples: a JSONL of ``{"positive": ..., "negative": ...}`` pairs, or two prompt files."""
    if pairs:
        rows = read_prompts(pairs, "--pairs")
        bad = [i for i, r in enumerate(rows, 1) if not (isinstance(r, dict) and "positive" in r and "negative" in r)]
        if bad:
            raise ValueError(f"--pairs file {pairs} line {bad[0]}: expected {{\"positive\": ..., \"negative\": ...}}")
        return [r["positive"] for r in rows], [r["negative"] for r in rows]
    if not positive or not negative:
        raise ValueError("give --pairs, or both --positive and --negative")
    return read_prompts(positive, "--positive"), read_prompts(negative, "--negative")


def read_triples(path: str | os.PathLike | None = None, prompts: list[str] | None = None,
                 preferred: list[str] | None = None, dispreferred: list[str] | None = None,
                 ) -> list[tuple[str, str, str]]:
    """``(prompt, preferred, dispreferred)`` triples: a JSONL of ``{"prompt", "preferred", "dispreferred"}`` objects,
    or three equally long lists (one preferred and one dispreferred completion per prompt)."""
    if path:
        rows = read_prompts(path, "--triples")
        keys = ("prompt", "preferred", "dispreferred")
        bad = [i for i, r in enumerate(rows, 1) if not (isinstance(r, dict) and all(isinstance(r.get(k), str)
                                                                                    for k in keys))]
        if bad:
            raise ValueError(f"--triples file {path} line {bad[0]}: expected {{\"prompt\": text, \"preferred\": text, "
                             f"\"dispreferred\": text}}")
        return [(r["prompt"], r["preferred"], r["dispreferred"]) for r in rows]
    prompts, preferred, dispreferred = prompts or [], preferred or [], dispreferred or []
    if not prompts:
        raise ValueError("give --triples FILE.jsonl, or --prompt with --preferred and --dispreferred")
    if len(preferred) == 1 and len(prompts) > 1:
        preferred = preferred * len(prompts)
    if len(dispreferred) == 1 and len(prompts) > 1:
        dispreferred = dispreferred * len(prompts)
    if not (len(prompts) == len(preferred) == len(dispreferred)):
        raise ValueError(f"{len(prompts)} --prompt, {len(preferred)} --preferred and {len(dispreferred)} "
                         f"--dispreferred: give one completion of each kind per prompt (or one for all)")
    return list(zip(prompts, preferred, dispreferred))


def layer_sites(model: Model, layers: str | list[int] = "all", kind: str = "resid_post") -> list[str]:
    """``blocks.{i}.<kind>`` for ``layers`` ('all', a comma list of indices, or a list), checked against the model."""
    if layers == "all":
        idx = list(range(model.n_layers))
    elif isinstance(layers, str):
        try:
            idx = [int(x) for x in layers.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"layers {layers!r}: give 'all' or comma-separated block indices like 3,5,9") from None
    else:
        idx = [int(x) for x in layers]
    if not idx:
        raise ValueError("no layers given")
    return model.check_sites([f"blocks.{i}.{kind}" for i in idx])
