"""Artifacts on disk: the one place actlab writes files durably and reads or writes safetensors.

An artifact is a folder holding ``cfg.json`` (``{"artifact": {kind, format_version, actlab_version}, ...config}``),
optionally a ``.safetensors`` file of tensors (with a crc32 per tensor in its header metadata, so a flipped bit is
caught on load) and a ``records.jsonl``. Every file is written to a temporary name in the same folder, flushed,
fsynced, renamed over the target and the folder fsynced, so a crash leaves the old file or the new one, never half.
Files are created with the process umask. Errors name the file and what was expected (:class:`ArtifactError`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:   # torch is imported where tensors are handled, so locks and JSON need no torch import
    import torch

CRC_KEY = "actlab.crc32"   # safetensors metadata key: JSON {tensor name: crc32 of its bytes}
LOCK_FILE = ".actlab.lock"


class ArtifactError(ValueError):
    """A file or folder that cannot be written or read as expected; the message names the path."""


class ArtifactMissingError(ArtifactError, FileNotFoundError):
    """A file or folder that should exist does not (both an ArtifactError and a FileNotFoundError)."""


# -- atomic writes -------------------------------------------------------------------------------------------
def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a directory so a rename in it survives a crash (no-op where directories cannot be opened)."""
    _fsync(folder)


def _fsync(path: str | os.PathLike) -> None:
    """fsync a file or a directory by path (no-op where it cannot be opened or synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _is_enospc(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e).lower()   # safetensors raises its own error type carrying the io error as text
    return "no space left" in text or "storagefull" in text or "os error 28" in text or "code: 28" in text


def _write_error(path: Path, e: BaseException) -> ArtifactError:
    if _is_enospc(e):
        return ArtifactError(f"no space left on device writing {path} ({e})")
    return ArtifactError(f"could not write {path}: {type(e).__name__}: {e}")


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (else set-and-restore)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _commit(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the umask's mode (safetensors creates 0600 files), fsync it, rename over ``path``, fsync folder."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _atomic(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Create a temp file next to ``path``, let ``fill(tmp)`` write it, then fsync + rename + fsync the folder.

    On any failure the temp file is removed and an OSError / serializer error becomes an ArtifactError naming
    ``path`` ("no space left on device writing ..." for ENOSPC)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(path, e) from e
    tmp = _temp_name(path)
    try:
        fill(tmp)
        _commit(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, (KeyboardInterrupt, SystemExit, ArtifactError)) or not isinstance(e, Exception):
            raise
        if isinstance(e, OSError) or type(e).__name__ == "SafetensorError" or _is_enospc(e):
            raise _write_error(path, e) from e
        raise
    return path


def _write_with(tmp: Path, write: Callable[[BinaryIO], None]) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # 0o666 & ~umask, like open()
    with os.fdopen(fd, "wb") as f:
        write(f)
        f.flush()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (temp file, fsync, rename, fsync folder)."""
    return _atomic(path, lambda tmp: _write_with(tmp, lambda f: f.write(data)))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text, written like :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Indented JSON plus a newline, written like :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def read_json(path: str | os.PathLike, *, what: str = "") -> Any:
    """Parse a JSON file; missing -> ArtifactMissingError (a FileNotFoundError), invalid -> ArtifactError."""
    path = Path(path)
    label = f"{what} " if what else ""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactMissingError(f"{label}file {path} does not exist") from None
    except IsADirectoryError:
        raise ArtifactError(f"{label}{path} is a folder; expected a JSON file") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{label}{path} is not UTF-8 JSON (byte {e.start}); corrupted?") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{label}{path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno} "
                            f"(char {e.pos} of {len(raw)}); truncated or corrupted?") from None


# -- tensors -------------------------------------------------------------------------------------------------
def _nonfinite(name: str, t: torch.Tensor) -> str | None:
    """The error message for a floating tensor holding NaN/Inf, else None."""
    import torch

    if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
        return f"{name} contains NaN/Inf ({int((~torch.isfinite(t)).sum())} of {t.numel()} values)"
    return None


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise ValueError("<name> contains NaN/Inf") if a floating tensor holds a non-finite value."""
    msg = _nonfinite(name, t)
    if msg:
        raise ValueError(msg)


def _crc(t: torch.Tensor) -> int:
    """crc32 of a contiguous CPU tensor's bytes (what safetensors stores)."""
    import torch

    return zlib.crc32(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else 0


def _prepare(tensors: dict[str, torch.Tensor], path: Path, allow_nonfinite: bool) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies, own storage where tensors share one (safetensors refuses shared storage)."""
    import torch

    out, seen = {}, set()
    for name, t in tensors.items():
        if not isinstance(name, str):
            raise ArtifactError(f"refusing to write {path}: tensor name {name!r} is not a string")
        if not isinstance(t, torch.Tensor):
            raise ArtifactError(f"refusing to write {path}: {name!r} is a {type(t).__name__}, not a tensor")
        msg = None if allow_nonfinite else _nonfinite(f"tensor {name!r}", t)
        if msg:
            raise ArtifactError(f"refusing to write {path}: {msg}")
        c = t.detach().to("cpu").contiguous()
        key = c.untyped_storage().data_ptr() if c.numel() else None
        if key is not None and (key in seen or c.untyped_storage().nbytes() != c.numel() * c.element_size()):
            c = c.clone()
        if key is not None:
            seen.add(key)
        out[name] = c
    return out


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                 *, allow_nonfinite: bool = False) -> Path:
    """Write a safetensors file atomically with a crc32 per tensor; refuses NaN/Inf unless ``allow_nonfinite``."""
    from safetensors.torch import save_file

    path = Path(path)
    ts = _prepare(tensors, path, allow_nonfinite)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[CRC_KEY] = json.dumps({k: _crc(v) for k, v in ts.items()})
    return _atomic(path, lambda tmp: save_file(ts, str(tmp), metadata=meta))


def _read_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    return (SafetensorError, OSError, RuntimeError, ValueError, json.JSONDecodeError)


_READ_ERRORS = _read_errors()


def _open_error(path: Path, e: BaseException) -> ArtifactError:
    return ArtifactError(f"{path} is not a readable safetensors file (truncated or corrupted?): {e}")


def tensor_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors header metadata of ``path`` (without actlab's checksum entry)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ArtifactMissingError(f"tensor file {path} does not exist")
    try:
        with safe_open(str(path), "pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
    except _READ_ERRORS as e:
        raise _open_error(path, e) from None
    meta.pop(CRC_KEY, None)
    return meta


def load_tensors(path: str | os.PathLike, *, names: Iterable[str] | None = None, check_finite: bool = True,
                 device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file (all tensors, or exactly ``names``), verifying checksums where the file has them.

    Missing file, truncated/corrupt file, a missing expected name, a checksum mismatch or NaN/Inf (with
    ``check_finite``) raise ArtifactError naming the file and the tensor."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ArtifactMissingError(f"tensor file {path} does not exist")
    out: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), "pt", device="cpu") as f:
            have = list(f.keys())
            crcs = json.loads((f.metadata() or {}).get(CRC_KEY, "{}"))
            want = list(have) if names is None else list(names)
            missing = [n for n in want if n not in have]
            if missing:
                raise ArtifactError(f"{path} holds no tensor(s) {missing}; it holds {sorted(have)}")
            for n in want:
                out[n] = f.get_tensor(n)
    except ArtifactError:
        raise
    except _READ_ERRORS as e:
        raise _open_error(path, e) from None
    size = path.stat().st_size
    for n, t in out.items():
        if n in crcs and _crc(t.contiguous()) != int(crcs[n]):
            raise ArtifactError(f"{path}: tensor {n!r} fails its checksum (file corrupted; {size} bytes on disk)")
        msg = _nonfinite(f"tensor {n!r}", t) if check_finite else None
        if msg:
            raise ArtifactError(f"{path}: {msg}")
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


# -- artifact folders ----------------------------------------------------------------------------------------
@dataclass
class Artifact:
    """A loaded artifact folder: ``config`` is cfg.json without its ``artifact`` block (version 0: legacy)."""

    folder: Path
    kind: str
    version: int
    config: dict
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


def _version() -> str:
    import actlab

    return getattr(actlab, "__version__", "unknown")


def save_artifact(folder: str | os.PathLike, kind: str, config: dict, tensors: dict | None = None, *,
                  version: int = 1, records: Iterable[dict] | None = None,
                  tensors_file: str = "weights.safetensors", cfg_file: str = "cfg.json",
                  records_file: str = "records.jsonl", metadata: dict[str, str] | None = None,
                  allow_nonfinite: bool = False) -> Path:
    """Write an artifact folder: tensors, then records, then ``cfg.json`` last (its presence marks it complete)."""
    folder = Path(folder)
    if "artifact" in config:
        raise ArtifactError(f"config for {folder / cfg_file} has a key 'artifact'; that name is reserved")
    block: dict[str, Any] = {"kind": kind, "format_version": int(version), "actlab_version": _version()}
    if tensors is not None:
        save_tensors(folder / tensors_file, tensors, {"actlab.kind": kind, **(metadata or {})},
                     allow_nonfinite=allow_nonfinite)
        block["tensors_file"] = tensors_file
        block["tensors"] = sorted(tensors)
    if records is not None:
        lines = "".join(json.dumps(r) + "\n" for r in records)
        atomic_write_text(folder / records_file, lines)
        block["records_file"] = records_file
    atomic_write_json(folder / cfg_file, {"artifact": block, **config})
    return folder


def _read_records(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactMissingError(f"records file {path} does not exist") from None
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{path} is not UTF-8 JSONL (byte {e.start}); corrupted?") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{path} line {i}: invalid JSON ({e.msg} at column {e.colno}); truncated?") from None
    return out


def load_artifact(folder: str | os.PathLike, kind: str, *, version: int = 1,
                  tensors_file: str | None = "weights.safetensors", cfg_file: str = "cfg.json",
                  records_file: str = "records.jsonl", legacy: bool | str = False,
                  check_finite: bool = True, device: str | torch.device | None = None) -> Artifact:
    """Read a folder written by :func:`save_artifact`, checking kind, format version and every file.

    ``legacy=True`` also accepts a ``cfg_file`` without the ``artifact`` block (written before artifacts existed)
    as version 0, returning the whole JSON as ``config``; ``legacy="<old kind>"`` additionally requires its
    top-level ``kind`` (when present) to equal that string. ``tensors_file=None`` skips the tensors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactMissingError(f"{kind} folder {folder} does not exist" if not folder.exists()
                                   else f"{folder} is a file; expected a {kind} folder")
    cfg_path = folder / cfg_file
    cfg = read_json(cfg_path, what=f"{kind} config")
    if not isinstance(cfg, dict):
        raise ArtifactError(f"{cfg_path} holds a JSON {type(cfg).__name__}; expected an object ({kind} config)")
    block = cfg.get("artifact")
    records: list[dict] = []
    if isinstance(block, dict):
        got, ver = block.get("kind"), block.get("format_version")
        if got != kind:
            raise ArtifactError(f"{cfg_path} is a {got!r} artifact; expected {kind!r}")
        if not isinstance(ver, int) or ver > version:
            raise ArtifactError(f"{cfg_path} has format_version {ver!r} (written by actlab "
                                f"{block.get('actlab_version')}); this actlab reads {kind!r} up to version "
                                f"{version}: upgrade actlab")
        config = {k: v for k, v in cfg.items() if k != "artifact"}
        tfile = block.get("tensors_file") if tensors_file is not None else None
        tensors = load_tensors(folder / tfile, names=block.get("tensors"), check_finite=check_finite,
                               device=device) if tfile else {}
        meta = tensor_metadata(folder / tfile) if tfile else {}
        if block.get("records_file"):
            records = _read_records(folder / block["records_file"])
        return Artifact(folder, kind, ver, config, tensors, records, meta)
    if not legacy:
        raise ArtifactError(f"{cfg_path} has no 'artifact' block; expected an actlab {kind!r} artifact")
    if isinstance(legacy, str) and cfg.get("kind", legacy) != legacy:
        raise ArtifactError(f"{cfg_path} is a {cfg.get('kind')!r} file; expected {legacy!r} ({kind})")
    tensors, meta = {}, {}
    if tensors_file is not None:
        tensors = load_tensors(folder / tensors_file, check_finite=check_finite, device=device)
        meta = tensor_metadata(folder / tensors_file)
    if (folder / records_file).exists():
        records = _read_records(folder / records_file)
    return Artifact(folder, kind, 0, dict(cfg), tensors, records, meta)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Write a whole folder at once: yields an empty temp folder beside ``path``; when the block ends without error
    its files are fsynced and it is renamed onto ``path`` (which must be absent or empty), else it is removed.
    Readers see the old state or the complete folder, never a half-written one (a model cache, an edited model).

    A non-empty ``path`` at commit time (another process finished first) raises ArtifactError naming it."""
    import shutil

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_name(path)
        tmp.mkdir(mode=0o777)                                # 0o777 & ~umask, like mkdir(1)
    except OSError as e:
        raise _write_error(path, e) from e
    try:
        yield tmp
        for f in sorted(tmp.rglob("*"), reverse=True):       # files first, then their folders
            _fsync(f)
        try:
            if path.exists():
                path.rmdir()                                 # only an empty folder gives way
            os.replace(tmp, path)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise ArtifactError(f"{path} was written by someone else meanwhile (not empty); kept theirs") from e
            raise _write_error(path, e) from e
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# -- folder lock ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, what: str = "") -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``folder`` (``<folder>/.actlab.lock``, holder PID inside) for the block.

    Non-blocking: a folder locked by another process (or another ``folder_lock`` in this one) raises
    ArtifactError naming the holder's PID. The lock dies with its process, so a crash never leaves it held."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise ArtifactError(f"cannot lock {folder}: {e}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ArtifactError(f"cannot lock {folder}: {e}") from e
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            doing = f" ({what})" if what else ""
            raise ArtifactError(f"{folder} is in use by another actlab process (pid {holder}){doing}; wait for it "
                                f"to finish or stop it") from None
        with contextlib.suppress(OSError):  # a full disk cannot take the PID; the lock is held all the same
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield folder / LOCK_FILE
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
