"""Token positions of the current forward call, and position selectors (``all``, ``last``, int, slice, list, mask).

Positions are absolute token positions counted from each row's first real token, so they mean the same thing
with or without left padding, in a full forward pass and in every KV-cached decode step of ``generate()``.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Union

import torch

Positions = Union[str, int, slice, list, tuple, torch.Tensor, None]


@dataclass
class PassInfo:
    """What the root model was called with: per-row token positions of this call and which are real tokens.

    ``positions_bp``: [batch, pos] absolute positions (first real token = 0); ``valid_bp``: [batch, pos] True for
    real tokens; ``length_b``: real tokens seen so far including this call; ``past``: cached tokens before this
    call; ``step``: 0 for a call without cache (a prefill or a plain forward), then +1 per KV-cached call.
    """

    positions_bp: torch.Tensor
    valid_bp: torch.Tensor
    length_b: torch.Tensor
    step: int = 0
    past: int = 0

    @property
    def batch(self) -> int:
        return self.positions_bp.shape[0]

    @property
    def seq(self) -> int:
        return self.positions_bp.shape[1]


def call_shape(args: tuple, kwargs: dict) -> tuple[int, int, torch.device, torch.Tensor | None, int] | None:
    """(batch, tokens of this call, device, 2-D attention mask or None, cached tokens before it) of an HF model's
    forward arguments, without tensor work; None when the input is not a token sequence."""
    x = kwargs.get("input_ids")
    if x is None and args and isinstance(args[0], torch.Tensor) and args[0].dim() == 2 and not args[0].is_floating_point():
        x = args[0]
    if x is None:
        emb = kwargs.get("inputs_embeds")
        if emb is None:
            return None
        b, p = emb.shape[:2]
        device = emb.device
    else:
        if x.dim() != 2:
            return None
        b, p = x.shape
        device = x.device
    mask = kwargs.get("attention_mask")
    if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor) and args[1].shape[:1] == (b,):
        mask = args[1]
    if not (isinstance(mask, torch.Tensor) and mask.dim() == 2 and mask.shape[0] == b and mask.shape[1] >= p):
        mask = None
    if mask is not None:
        past = mask.shape[1] - p  # a 2-D mask covers cached + current tokens (HF generate convention)
    else:
        past = 0
        cache_position = kwargs.get("cache_position")
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        if cache_position is not None and cache_position.numel():
            past = int(cache_position.reshape(-1)[0])
        elif cache is not None and hasattr(cache, "get_seq_length"):
            past = int(cache.get_seq_length())
    return b, p, device, mask, past


def pass_info(args: tuple, kwargs: dict, step: int) -> PassInfo | None:
    """Derive positions from an HF model's forward arguments; None when the input is not a token sequence."""
    shape = call_shape(args, kwargs)
    return None if shape is None else info_from_shape(shape, step)


def info_from_shape(shape: tuple[int, int, torch.device, torch.Tensor | None, int], step: int) -> PassInfo:
    """The PassInfo of a ``call_shape`` (the tensor work: positions, validity, lengths)."""
    b, p, device, mask, past = shape
    absolute = torch.arange(past, past + p, device=device)
    if mask is not None:
        m = mask.bool()
        pad = (m.long().cumsum(1) == 0).sum(1)
        positions = absolute[None, :] - pad[:, None]
        valid = m[:, past: past + p]
        length = m.sum(1)
    else:
        positions = absolute[None, :].expand(b, p)
        valid = torch.ones(b, p, dtype=torch.bool, device=device)
        length = torch.full((b,), past + p, device=device)
    return PassInfo(positions, valid, length, step if past else 0, past)


def selects_all(sel: Positions) -> bool:
    """True for the selectors of every position (``None``, ``'all'``): they need no position bookkeeping."""
    return sel is None or (isinstance(sel, str) and sel == "all")


def select_mask(sel: Positions, info: PassInfo | None, what: str = "positions") -> torch.Tensor | None:
    """Boolean [batch, pos] mask for a selector, or None meaning every position.

    Selectors count real tokens from 0 (padding excluded). ``last`` is the newest real token of the call: the last
    prompt token at prefill and the new token at each decode step. A bool mask is ``[batch, n]`` over real-token
    positions; negative ints and slice bounds count back from each row's length.
    """
    if selects_all(sel):
        return None
    if info is None:
        raise ValueError(f"{what}={sel!r} needs a token sequence input; this forward pass has none (use 'all')")
    pos, valid = info.positions_bp, info.valid_bp
    if isinstance(sel, str):
        if sel == "last":
            last = torch.where(valid, pos, torch.full_like(pos, -1)).amax(1, keepdim=True)
            return (pos == last) & valid
        raise ValueError(f"unknown {what} selector {sel!r}; use 'all', 'last', an int, a slice, a list or a mask")
    if isinstance(sel, int):
        k = sel if sel >= 0 else None
        target = torch.full_like(info.length_b, sel) if k is not None else info.length_b + sel
        return (pos == target[:, None]) & valid
    if isinstance(sel, slice):
        if sel.step not in (None, 1):
            idx = list(range(*sel.indices(int(info.length_b.max()))))
            return select_mask(idx, info, what)
        lo = 0 if sel.start is None else sel.start
        hi = None if sel.stop is None else sel.stop
        lo_t = info.length_b + lo if lo < 0 else torch.full_like(info.length_b, lo)
        m = pos >= lo_t[:, None]
        if hi is not None:
            hi_t = info.length_b + hi if hi < 0 else torch.full_like(info.length_b, hi)
            m &= pos < hi_t[:, None]
        return m & valid
    if isinstance(sel, (list, tuple)):
        try:
            ints = [operator.index(i) for i in sel]
        except TypeError:
            raise TypeError(f"{what} list must hold ints; got {list(sel)!r}") from None
        idx = torch.as_tensor(ints, dtype=torch.long, device=pos.device).reshape(1, -1)
        target = torch.where(idx < 0, info.length_b.reshape(-1, 1).to(pos.device) + idx, idx)  # [batch, k]
        return (pos[:, :, None] == target[:, None, :]).any(-1) & valid
    if isinstance(sel, torch.Tensor):
        if sel.dtype != torch.bool:
            return select_mask(sel.tolist(), info, what)
        if sel.dim() != 2 or sel.shape[0] != info.batch:
            raise ValueError(f"{what} mask has shape {tuple(sel.shape)}; expected [batch={info.batch}, positions]")
        mask = sel.to(pos.device)  # indexed by real-token position (same meaning with padding or a KV cache)
        idx = pos.clamp(min=0, max=mask.shape[1] - 1)
        out = mask.gather(1, idx) & (pos < mask.shape[1])
        return out & valid & (pos >= 0)
    raise TypeError(f"{what} must be 'all', 'last', int, slice, list or bool tensor; got {type(sel).__name__}")


def position_ids_from_mask(mask: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """Position ids that follow a ``[batch, past + n]`` attention mask, the last ``n`` columns (the current call's
    tokens): real tokens get ``cumsum(mask) - 1``, so a left-padded row gets the same ids as the row alone; padding
    gets its index less the row's leading padding, clamped at 0 (right padding: exactly the default ids)."""
    m = mask.long()
    real = m.cumsum(-1) - 1
    lead = (real < 0).sum(-1, keepdim=True)
    pad = (torch.arange(m.shape[-1], device=m.device) - lead).clamp(min=0)
    ids = torch.where(m.bool(), real, pad)
    return ids if n is None else ids[:, ids.shape[1] - n:]


def positions_to_json(sel: Positions) -> str | int | list | dict | None:
    """JSON form of a selector (tensors are stored separately by the caller)."""
    if isinstance(sel, slice):
        return {"slice": [sel.start, sel.stop, sel.step]}
    if isinstance(sel, tuple):
        return list(sel)
    if isinstance(sel, torch.Tensor):
        raise TypeError("tensor position masks are stored as tensors, not JSON")
    return sel


def positions_from_json(obj: str | int | list | dict | None) -> Positions:
    if isinstance(obj, dict) and "slice" in obj:
        return slice(*obj["slice"])
    return obj


# -- the one text syntax for positions (CLI flags, stored configs) -------------------------------------------------
PositionSpec = str | int | slice | list
POSITIONS_HELP = "all, last, an index (-1 = last), a slice a:b or a:b:step (python semantics), or a list 1,3,5"

_INT = re.compile(r"^[+-]?\d+$")


def _int(part: str, text: str) -> int | None:
    part = part.strip()
    if part == "":
        return None
    if not _INT.match(part):
        raise ValueError(f"bad positions {text!r}: {part!r} is not an integer; use {POSITIONS_HELP}")
    return int(part)


def parse_positions(text: str | int | None) -> PositionSpec:
    """The one position syntax: ``all``, ``last``, ``-1``, ``5``, ``2:7`` / ``2:`` / ``::2`` (a slice, python
    semantics over each row's real tokens), ``1,3,5`` (a list). Returns a selector ``model.record`` takes."""
    if text is None:
        return "all"
    if isinstance(text, int):
        return text
    t = str(text).strip().lower()
    if t in ("all", "last"):
        return t
    if not t:
        raise ValueError(f"empty positions; use {POSITIONS_HELP}")
    if ":" in t:
        parts = t.split(":")
        if len(parts) > 3 or "," in t:
            raise ValueError(f"bad positions {text!r}: a slice is start:stop or start:stop:step; use {POSITIONS_HELP}")
        start, stop, *step = (_int(p, text) for p in parts)
        step = step[0] if step else None
        if step == 0:
            raise ValueError(f"bad positions {text!r}: slice step cannot be 0")
        return slice(start, stop, step)
    if "," in t:
        idx = [_int(p, text) for p in t.split(",") if p.strip()]
        if any(i < 0 for i in idx):
            raise ValueError(f"bad positions {text!r}: list positions count from 0 (negative ones only singly or in "
                             f"a slice, e.g. -1 or -3:)")
        return idx
    value = _int(t, text)
    return value


def context_position_mask(spec: str | int, length: int) -> torch.Tensor:
    """Bool ``[length]`` mask of the positions of a fixed-length context that a position spec (the syntax of
    :func:`parse_positions`) keeps; negative indices and slice bounds count back from the end."""
    sel = parse_positions(spec)
    m = torch.zeros(length, dtype=torch.bool)
    try:
        if sel == "all":
            m[:] = True
        elif sel == "last":
            m[-1] = True
        else:
            m[sel if not isinstance(sel, int) else [sel]] = True
    except IndexError as e:
        raise ValueError(f"positions {spec!r} fall outside a {length}-token context ({e})") from None
    if not m.any():
        raise ValueError(f"positions {spec!r} keep no position of a {length}-token context")
    return m
