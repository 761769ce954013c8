"""Read documents from a text file, JSON lines, parquet, or a local Hugging Face dataset folder.

``.txt``: documents separated by blank lines; a file with no blank line at all holds one document per line.
``.jsonl``: one JSON object per line, the document in ``text_field``. ``.parquet``: a column ``text_field``
(needs pyarrow). A folder: a ``datasets.save_to_disk`` folder (needs ``datasets``), else every .txt/.jsonl/.parquet
file in it, in sorted order. Whitespace-only documents are dropped. Nothing is downloaded.
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


def _txt(path: Path, mode: str) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    if mode == "auto":
        mode = "paragraphs" if re.search(r"\n[ \t]*\n", text.strip()) else "lines"
    if mode == "paragraphs":
        return [d.strip() for d in re.split(r"\n[ \t]*\n", text)]
    if mode == "lines":
        return [line.strip() for line in text.split("\n")]
    raise ValueError(f"txt_mode must be 'auto', 'paragraphs' or 'lines'; got {mode!r}")


def _jsonl(path: Path, field: str) -> list[str]:
    docs = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or field not in obj:
                keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
                raise ValueError(f"{path}:{i}: no {field!r} field (found {keys}); pass text_field=...")
            docs.append(str(obj[field]))
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


def load_texts(path: str | os.PathLike, text_field: str = "text", txt_mode: str = "auto") -> list[str]:
    """All documents of ``path`` as a list of strings (see the module docstring for the formats).

    Raises FileNotFoundError for a missing path and ValueError for an empty dataset or an unknown format.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data path {str(path)!r} does not exist")
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
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data path {str(path)!r} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
