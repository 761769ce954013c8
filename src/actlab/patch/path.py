"""Path patching (sender -> receivers), circuit overlap between tasks, and attention-pattern overrides.

Path patching (IOI methodology): run the base input with the sender's output taken from the source run and every
other component in ``freeze`` held at its base value; record the receivers' inputs; then run the base input with
only those receiver inputs replaced. LayerNorm statistics are *recomputed*, not frozen (documented in
docs/patch.md).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch

from actlab.core import Fn, Intervention, Replace
from actlab.patch.common import Effect, PatchResult

if TYPE_CHECKING:
    from actlab.models import Model

Component = "str | tuple[str, int]"


def parse_component(c) -> tuple[str, int | None]:
    """``'site'``, ``'site#h'`` or ``(site, h)`` -> (site, head or None)."""
    if isinstance(c, tuple):
        return c[0], (None if c[1] is None else int(c[1]))
    if isinstance(c, str) and "#" in c:
        s, h = c.rsplit("#", 1)
        return s, int(h)
    if isinstance(c, str):
        return c, None
    raise TypeError(f"a component is 'site', 'site#head' or (site, head); got {c!r}")


def _head_slice(t: torch.Tensor, head: int | None, head_dim: int | None):
    """Index selecting one head: dim 2 for per-head views [b,p,H,dh], a channel slice for flat [b,p,H*dh]."""
    if head is None:
        return (Ellipsis,)
    if t.dim() >= 4:
        return (slice(None), slice(None), head)
    if head_dim is None:
        raise ValueError("a head of a flat site needs head_dim (the width of one head)")
    if (head + 1) * head_dim > t.shape[-1]:
        raise ValueError(f"head {head} x head_dim {head_dim} exceeds the site width {t.shape[-1]}")
    return (Ellipsis, slice(head * head_dim, (head + 1) * head_dim))


def default_freeze(m: Model) -> list[str]:
    """Per-head outputs and MLP outputs of every block (what path patching holds at base values)."""
    out = [s for s in m.sites if s.endswith(".attn.z") or s.endswith(".mlp_out")]
    if not out:
        raise ValueError(f"{m.name} has no canonical attn.z/mlp_out sites; pass freeze=[...] (the component outputs "
                         f"to hold at base values)")
    return out


def _head_dim(m: Model) -> int | None:
    """The width of one head (from the architecture adapter), or None where the model has no head geometry."""
    from actlab.models import Unsupported

    try:
        return int(m.adapter.d_head)
    except (Unsupported, TypeError, AttributeError):
        return None


def _splice(base: torch.Tensor, other: torch.Tensor, head: int | None, head_dim: int | None) -> torch.Tensor:
    if head is None:
        return other.clone()
    out = base.clone()
    idx = _head_slice(out, head, head_dim)
    out[idx] = other[idx]
    return out


PathEffect = Effect  # base / source / patched scores of a path patch


def path_patch(m: Model, base, source, sender, receivers: Sequence, score: Callable, *, freeze: list[str] | None = None,
               head_dim: int | None = None) -> PathEffect:
    """Effect on ``score(output) -> [batch]`` of the sender's source output reaching only ``receivers``.

    ``sender``/``receivers``: components (``'site'``, ``'site#head'``, ``(site, head)``); receivers are inputs read by
    downstream components (``module:<q_proj>``, ``blocks.{i}.mlp_in``, ``blocks.{i}.resid_post`` for the direct path
    to the logits). ``freeze``: component outputs held at base values (default: all ``attn.z`` and ``mlp_out``).
    """
    s_site, s_head = parse_component(sender)
    recv = [parse_component(r) for r in receivers]
    if not recv:
        raise ValueError("path_patch needs at least one receiver")
    freeze = default_freeze(m) if freeze is None else list(freeze)
    head_dim = head_dim if head_dim is not None else _head_dim(m)
    bad = [r for r, _ in recv if r in freeze]
    if bad:
        raise ValueError(f"receiver {bad[0]!r} is also frozen; receivers must be inputs read downstream "
                         f"(e.g. a q/k/v projection, mlp_in or resid_post), not frozen component outputs")
    m.check_sites([s_site] + [r for r, _ in recv] + freeze)
    rsites = sorted({r for r, _ in recv})
    frozen = sorted(set(freeze) | {s_site})
    with torch.no_grad():
        with m.recording(frozen) as rb:
            out_b = m(base)
        with m.recording([s_site]) as rs:
            out_s = m(source)
        base_cache = rb.to_dict()
        sender_val = _splice(base_cache[s_site], rs[s_site], s_head, head_dim)
        ivs: list[tuple[str, Intervention]] = [(s, Replace(value=base_cache[s])) for s in frozen if s != s_site]
        ivs.append((s_site, Replace(value=sender_val)))
        with m.intervene(ivs), m.recording(rsites) as rr:  # pass 2: sender path only, rest frozen at base
            m(base)
        with m.recording(rsites) as rbase:
            m(base)
        patch = []
        for site in rsites:
            val = rbase[site]
            for r, h in recv:
                if r == site:
                    val = _splice(val, rr[site], h, head_dim)
            patch.append((site, Replace(value=val)))
        with m.intervene(patch):  # pass 3: only the receivers' inputs change
            out_p = m(base)
    f = lambda o: float(score(o).float().mean())  # noqa: E731
    return PathEffect(f(out_b), f(out_s), f(out_p))


def path_patch_sweep(m: Model, base, source, senders: Sequence, receivers: Sequence, score: Callable, *,
                     freeze: list[str] | None = None, head_dim: int | None = None, metric_name: str = "score",
                     progress: bool = False) -> PatchResult:
    """``path_patch`` for each sender; a ``PatchResult`` over dim ``sender``.

    This is *noising* (``direction='noise'``, recorded in the result): ``base`` is the clean run and ``source`` the
    corrupted one, so a normalised effect of 1 means the sender's corrupted output alone fully corrupts behaviour.
    """
    from tqdm.auto import tqdm

    vals, eff = [], None
    for s in tqdm(list(senders), desc="path patching", disable=not progress):
        eff = path_patch(m, base, source, s, receivers, score, freeze=freeze, head_dim=head_dim)
        vals.append(eff.patched)
    labels = {"sender": [s if isinstance(s, str) else f"{s[0]}#{s[1]}" for s in senders]}
    return PatchResult(torch.tensor(vals), ("sender",), labels, eff.base, eff.source, metric_name, "path", "noise",
                       meta={"receivers": [str(r) for r in receivers],
                             "mode": "noising: the base (clean) run with the sender's source (corrupted) output "
                                     "reaching only the receivers"})


def path_patch_prompts(m: Model, clean, corrupt, metric, senders: Sequence, receivers: Sequence, *,
                       freeze: list[str] | None = None, align: str = "strict", progress: bool = False) -> PatchResult:
    """``path_patch_sweep`` from prompt pairs and a patching ``Metric`` (what ``actlab patch path`` runs).

    Noising: the clean prompts are the base run, the corrupted ones the source (recorded in the result)."""
    from actlab.patch.common import make_pairs
    from actlab.patch.subspace import lm_score

    pairs = make_pairs(m, clean, corrupt, align=align)
    return path_patch_sweep(m, pairs.inputs("clean"), pairs.inputs("corrupt"), senders, receivers, lm_score(metric),
                            freeze=freeze, metric_name=getattr(metric, "name", "score"), progress=progress)


# -- circuit overlap -------------------------------------------------------------------------------------
def top_components(result: PatchResult, frac: float = 0.02, *, min_count: int = 1) -> set[str]:
    """The most important cells of a result (largest |normalised effect|), as 'label|label' strings."""
    if not 0 < frac <= 1:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    v = result.normalized.abs().flatten()
    k = max(min_count, int(round(frac * v.numel())))
    names = [""]
    for d in result.dims:
        names = [f"{a}|{b}" if a else b for a in names for b in result.labels[d]]
    return {names[i] for i in v.topk(min(k, v.numel())).indices.tolist()}


def circuit_overlap(a: set, b: set, mode: str = "jaccard") -> float:
    """Shared components: ``jaccard`` = |A & B| / |A | B|; ``of_a`` = |A & B| / |A| (fraction of A's circuit reused)."""
    a, b = set(a), set(b)
    if not a or not b:
        raise ValueError("circuit_overlap needs two non-empty component sets")
    if mode == "jaccard":
        return len(a & b) / len(a | b)
    if mode == "of_a":
        return len(a & b) / len(a)
    raise ValueError(f"mode must be 'jaccard' or 'of_a', got {mode!r}")


# -- attention-pattern override --------------------------------------------------------------------------
def attention_override(m: Model, layer: int, heads: int | Sequence[int], pattern: torch.Tensor,
                       dest: Sequence[int] | None = None) -> list[tuple[str, Intervention]]:
    """Interventions forcing heads of ``layer`` to attend with ``pattern``; use with ``m.intervene(...)``.

    ``pattern``: [dest, src] or [batch, dest, src] rows of attention weights (e.g. ``one_hot_pattern``), applied
    at the ``dest`` rows (default all). Exact: the head output becomes ``pattern @ V`` with ``V`` read from the
    per-head value site ``blocks.{layer}.attn.v`` of the same forward (grouped KV heads mapped), so the model's own
    pattern reproduces its output. Works on every architecture whose site table has ``attn.v`` and ``attn.z``.
    """
    heads = [heads] if isinstance(heads, int) else list(heads)
    vsite, zsite = f"blocks.{layer}.attn.v", f"blocks.{layer}.attn.z"
    missing = [s for s in (vsite, zsite) if s not in m.sites]
    if missing:
        raise ValueError(f"attention overrides need the per-head sites {vsite} and {zsite}; {m.name} ({m.family}) "
                         f"has no {missing[0]}")
    stash: dict[str, torch.Tensor] = {}

    def grab(act, ctx):  # [b, p, n_kv, dh]
        stash["v"] = act
        return act

    def edit(act, ctx):  # act: [b, p, H, dh]
        v = stash.get("v")
        if v is None:
            raise RuntimeError(f"attention_override: {vsite} did not run before {zsite}")
        n_h, n_kv = act.shape[2], v.shape[2]
        p = pattern.to(device=act.device, dtype=act.dtype)
        if p.dim() == 2:
            p = p[None].expand(act.shape[0], -1, -1)
        if p.shape[1:] != (act.shape[1], act.shape[1]):
            raise ValueError(f"attention pattern has shape {list(pattern.shape)}; expected [{act.shape[1]}, "
                             f"{act.shape[1]}] (dest x src) for this input")
        out = act.clone()
        rows = list(range(act.shape[1])) if dest is None else list(dest)
        for h in heads:
            if not 0 <= h < n_h:
                raise ValueError(f"head {h} out of range (layer {layer} has {n_h} heads)")
            vh = v[:, :, h // (n_h // n_kv)].to(act.dtype)  # [b, p, dh]
            out[:, rows, h] = (p @ vh)[:, rows]
        return out

    return [(vsite, Fn(fn=grab)), (zsite, Fn(fn=edit))]


def one_hot_pattern(width: int, src: int) -> torch.Tensor:
    """Every destination attends only to position ``src`` ([width, width])."""
    p = torch.zeros(width, width)
    p[:, src] = 1.0
    return p


def uniform_pattern(width: int, srcs: Sequence[int]) -> torch.Tensor:
    """Every destination attends uniformly to positions ``srcs`` (renormalised)."""
    p = torch.zeros(width, width)
    p[:, list(srcs)] = 1.0 / len(srcs)
    return p
