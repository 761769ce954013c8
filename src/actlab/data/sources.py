"""Read documents from a text file, JSON lines, parquet, or a local Hugging Face dataset folder.

``.txt``: documents separated by blank lines; a file with no blank line at all holds one document per line.
``.jsonl``: one JSON object per line, the document in ``text_field``. ``.parquet``: a column ``text_field``
(needs pyarrow). A folder: a ``datasets.save_to_disk`` folder (needs ``datasets``), else every .txt/.jsonl/.parquet
file in it, in sorted order. ``"demo"`` (or None) is the bundled demo corpus (``resolve_data``). Whitespace-only
documents are dropped. Text must be UTF-8: a binary or otherwise undecodable file is refused naming the file and
the byte offset (and, for .jsonl, the line). Nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

SUFFIXES = (".txt", ".jsonl", ".parquet")


def _need(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"reading {what} needs the {module!r} package: pip install 'actlab[data]'") from e


DEMO = "demo"


def resolve_data(spec: str | os.PathLike | None) -> Path:
    """The file or folder a data argument names: ``None`` or ``"demo"`` is the bundled demo corpus (built on first
    use), anything else a path that must exist. One resolver for every command that reads text."""
    if spec is None or str(spec) == DEMO:
        from actlab.data.corpus import demo_corpus

        return demo_corpus()
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data path {str(path)!r} does not exist (a .txt/.jsonl/.parquet file, a dataset "
                                f"folder, or {DEMO!r} for the bundled demo corpus)")
    return path


def _decode(raw: bytes, path: Path, what: str = "") -> str:
    """UTF-8 text of a data file's bytes; binary (NUL bytes) or non-UTF-8 input is refused naming the file."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}{what}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); is it a "
                         f"binary file? Convert it to UTF-8 text") from None
    nul = text.find("\0")
    if nul >= 0:
        raise ValueError(f"{path}{what}: holds a NUL byte at offset {len(text[:nul].encode())}: a binary file, not "
                         f"text")
    return text


def _txt(path: Path, mode: str) -> list[str]:
    text = _decode(path.read_bytes(), path).lstrip("\ufeff").replace("\r\n", "\n")
    if mode == "auto":
        mode = "paragraphs" if re.search(r"\n[ \t]*\n", text.strip()) else "lines"
    if mode == "paragraphs":
        return [d.strip() for d in re.split(r"\n[ \t]*\n", text)]
    if mode == "lines":
        return [line.strip() for line in text.split("\n")]
    raise ValueError(f"txt_mode must be 'auto', 'paragraphs' or 'lines'; got {mode!r}")


def _jsonl(path: Path, field: str) -> list[str]:
    docs = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            line = _decode(raw, path, f":{i}")
            if i == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict) or field not in obj:
                keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
                raise ValueError(f"{path}:{i}: no {field!r} field (found {keys}); pass text_field=...")
            if not isinstance(obj[field], str):
                raise ValueError(f"{path}:{i}: field {field!r} holds {type(obj[field]).__name__} "
                                 f"{json.dumps(obj[field])[:40]}, not a string")
            docs.append(obj[field])
    return docs


def _parquet(path: Path, field: str) -> list[str]:
    pq = _need("pyarrow.parquet", f"{path.name} (parquet)")
    table = pq.read_table(path)
    if field not in table.column_names:
        raise ValueError(f"{path}: no column {field!r} (columns: {table.column_names}); pass text_field=...")
    return [str(x) if x is not None else "" for x in table.column(field).to_pylist()]


def _hf_folder(path: Path, field: str) -> list[str]:
    datasets = _need("datasets", f"the Hugging Face dataset folder {path}")
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else sorted(ds)[0]
        ds = ds[split]
    if field not in ds.column_names:
        raise ValueError(f"{path}: no column {field!r} (columns: {ds.column_names}); pass text_field=...")
    return [str(x) if x is not None else "" for x in ds[field]]


def _is_hf_folder(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (
        path / "state.json").exists()


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no {'/'.join(SUFFIXES)} file and is not a datasets.save_to_disk folder")
        return files
    return [path]


def load_texts(path: str | os.PathLike | None, text_field: str = "text", txt_mode: str = "auto") -> list[str]:
    """All documents of ``path`` (or ``"demo"``) as a list of strings (see the module docstring for the formats).

    Raises FileNotFoundError for a missing path and ValueError for an empty dataset, an unknown format or a file
    that is not UTF-8 text (naming the file, and the line for .jsonl).
    """
    path = resolve_data(path)
    if path.is_dir() and _is_hf_folder(path):
        docs = _hf_folder(path, text_field)
    else:
        docs = []
        for f in _files(path):
            if f.suffix == ".txt":
                docs += _txt(f, txt_mode)
            elif f.suffix == ".jsonl":
                docs += _jsonl(f, text_field)
            elif f.suffix == ".parquet":
                docs += _parquet(f, text_field)
            else:
                raise ValueError(f"unsupported data file {f.name!r}: use .txt, .jsonl, .parquet or a dataset folder")
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError(f"the dataset {str(path)!r} is empty: no non-blank document found")
    return docs


def data_fingerprint(path: str | os.PathLike) -> str:
    """sha256 (16 hex) over the names, sizes and bytes of the data files: identifies a dataset for resumption."""
    path = resolve_data(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
