"""Canonical site names: one naming for every model, built from the architecture adapters.

A site is a place in the forward pass where an activation lives. Each architecture adapter
(``models/arch_*.py``) maps the canonical names of DESIGN.md (``blocks.{i}.resid_post`` ...) to a module path and
whether the activation is that module's input or its output. Adding an architecture is adding one ``arch_*`` file.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from actlab.models.adapter import Adapter, Generic, adapter_for
from actlab.models.attention import attach_points

# per-block kinds in forward order
SITE_KINDS = ("resid_pre", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z", "attn_out", "resid_mid", "mlp_in",
              "moe.router", "mlp_act", "mlp_out", "resid_post")


@dataclass(frozen=True)
class SiteSpec:
    """Where one site lives: ``module`` path (relative to the HF model), ``io`` 'in' or 'out', and how to view it.

    ``heads``: split the last dim into ``[heads, d_head]`` (per-head sites). ``flat_tokens``: the module sees
    ``[batch*pos, d]`` (MoE routers); the engine views it as ``[batch, pos, d]``. ``rebuild``: for outputs that
    are derived from the site's tensor inside the module (router logits -> top-k), recompute them after an edit.
    ``plus_input_of``: the site is this module's output plus the input of another module (pre-LN ``resid_mid`` =
    ``resid_pre + attn_out``, the residual read at the block's first norm, hooked at the attention output so an edit
    reaches the residual stream itself, not only the MLP's norm). ``pattern``: the attention probabilities
    ``[batch, head, query, key]``, seen as ``[batch, query, head, key]`` (positions first, like every site); hooking
    it switches the model to actlab's eager attention while the hook lives (see ``actlab.models.attention``).
    ``split``: ``(index, parts)``, the site is part ``index`` of ``parts`` equal parts of a fused projection's output
    (GPT-2's ``c_attn`` is ``[q | k | v]``), seen per head; an edit changes only that part. ``split_inner``: the
    parts interleave inside each head instead (``[head, parts, d_head]``, GPT-NeoX's ``query_key_value``).
    """

    name: str
    module: str
    io: str = "out"
    heads: int | None = None
    flat_tokens: bool = False
    rebuild: Callable | None = field(default=None, compare=False)
    plus_input_of: str | None = None
    pattern: bool = False
    split: tuple[int, int] | None = None
    split_inner: bool = False


MODULE_PREFIX = "module:"


class SiteMap:
    """All canonical sites of a model, resolvable by name; raw ``module:<path>`` works for any module."""

    def __init__(self, module: torch.nn.Module, adapter: Adapter | None = None):
        self.module = module
        self.adapter = adapter if adapter is not None else adapter_for(module)
        self.family = None if isinstance(self.adapter, Generic) else self.adapter  # has .name, like before
        self.n_layers = self.adapter.n_layers
        self._specs: dict[str, SiteSpec] = {}
        if self.family is None:
            return
        glob = self.adapter.global_sites()
        if "embed" in glob:
            self._specs["embed"] = glob["embed"]
        for i in range(self.n_layers):
            blk = self.adapter.block_sites(i)
            for kind, spec in sorted(blk.items(), key=lambda kv: SITE_KINDS.index(kv[0])):
                self._specs[f"blocks.{i}.{kind}"] = dataclasses.replace(spec, name=f"blocks.{i}.{kind}")
        for k in ("final_norm", "logits"):
            if k in glob:
                self._specs[k] = glob[k]
        attach_points(module, [v.module.rsplit(".", 1)[0] for v in self._specs.values() if v.pattern])
        # drop sites whose module does not exist (e.g. a base model without lm_head)
        names = dict(module.named_modules())
        self._specs = {k: v for k, v in self._specs.items() if v.module in names}

    @property
    def names(self) -> list[str]:
        """Canonical names in forward order, then ``module:`` paths are also accepted."""
        return list(self._specs)

    def resolve(self, name: str) -> SiteSpec:
        """The spec for a canonical name or ``module:<path>[:in]``; unknown names list the closest valid ones."""
        if name in self._specs:
            return self._specs[name]
        if name.startswith(MODULE_PREFIX):
            path, io = name[len(MODULE_PREFIX):], "out"
            if path.endswith(":in"):
                path, io = path[:-3], "in"
            modules = dict(self.module.named_modules())
            if path not in modules:
                close = difflib.get_close_matches(path, [m for m in modules if m], n=5, cutoff=0.5)
                raise KeyError(f"no module {path!r} in {type(self.module).__name__}; closest module paths: "
                               f"{', '.join(close) or '(none)'}")
            return SiteSpec(name, path, io)
        m = re.match(r"blocks\.(\d+)\.(.+)", name)
        why = self.adapter.missing_sites().get(m.group(2)) if m and int(m.group(1)) < self.n_layers else None
        if why:
            raise KeyError(f"site {name!r} does not exist in this {self.adapter.name} model: {why}")
        close = difflib.get_close_matches(name, self.names, n=5, cutoff=0.6)
        if not close:
            if m and int(m.group(1)) >= self.n_layers:
                close = [f"blocks.{self.n_layers - 1}.{m.group(2)}"] if self.n_layers else []
        fam = self.adapter.name
        kinds = sorted({n.split(".", 2)[-1] for n in self.names if n.startswith("blocks.")})
        raise KeyError(
            f"unknown site {name!r} for this {fam} model ({self.n_layers} blocks). Closest valid names: "
            f"{', '.join(close) or '(none)'}. Per-block kinds: {', '.join(kinds) or '(none)'}; "
            f"any module is reachable as 'module:<path>' (see model.module_paths())."
        )

    def pattern_switch(self):
        """The reference-counted switch to actlab's eager attention, which attention-pattern sites need."""
        from actlab.models.attention import PatternSwitch

        return PatternSwitch(self.module)

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
            return True
        except KeyError:
            return False
