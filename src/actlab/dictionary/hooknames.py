"""Hook names of the peers (TransformerLens / SAELens, sparsify module paths) <-> actlab site names.

Pretrained SAEs name their input by the tool that trained them: SAELens by TransformerLens hook
(``blocks.8.hook_resid_pre``, ``blocks.8.attn.hook_z``), sparsify by the HF module whose output it read
(``layers.8`` = the block's output, ``layers.8.mlp`` = the MLP's output, or its input -> output for a transcoder).
"""
from __future__ import annotations

import re

from actlab.models import SITE_KINDS

# TransformerLens hook (after ``blocks.N.``) -> actlab site kind; the reverse map is used for exports
_TL = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid", "hook_resid_post": "resid_post",
       "hook_attn_out": "attn_out", "hook_mlp_out": "mlp_out", "attn.hook_z": "attn.z", "attn.hook_q": "attn.q",
       "attn.hook_k": "attn.k", "attn.hook_v": "attn.v", "attn.hook_pattern": "attn.pattern",
       "mlp.hook_post": "mlp_act", "ln2.hook_normalized": "mlp_in"}
_TL_ONE_WAY = {"hook_mlp_in": "resid_mid"}        # TL's hook_mlp_in is the residual before ln2, not the MLP input
_TL_GLOBAL = {"hook_embed": "embed", "ln_final.hook_normalized": "final_norm"}
_KIND_TO_TL = {v: k for k, v in _TL.items()}

# sparsify hookpoints: a module path inside the HF model (with or without the base-model prefix)
_SP_BLOCK = re.compile(r"^(?:model\.|transformer\.|gpt_neox\.)?(?:layers|h)\.(\d+)(?:\.(\w+))?$")
_SP_SUB = {None: "resid_post", "mlp": "mlp_out", "self_attn": "attn_out", "attn": "attn_out",
           "attention": "attn_out"}


_KINDS = frozenset(SITE_KINDS)  # actlab's per-block site kinds (the site table's names; a model may lack some)


def is_site(name: str) -> bool:
    """An actlab site name (``blocks.N.<kind>`` or a global site)."""
    m = re.match(r"^blocks\.\d+\.(.+)$", name)
    return (m is not None and m.group(1) in _KINDS) or name in ("embed", "final_norm", "logits")


def to_site(name: str | None, transcoder_input: bool = False) -> str:
    """The actlab site for a TransformerLens / SAELens / sparsify hook name ('' when unknown or empty).

    ``transcoder_input``: a sparsify transcoder's hookpoint names the module whose *input* it reads
    (``layers.8.mlp`` -> ``blocks.8.mlp_in``)."""
    if not name:
        return ""
    if is_site(name):
        return name
    if name in _TL_GLOBAL:
        return _TL_GLOBAL[name]
    m = re.match(r"^blocks\.(\d+)\.(.+)$", name)
    if m and (m.group(2) in _TL or m.group(2) in _TL_ONE_WAY):
        return f"blocks.{m.group(1)}.{_TL.get(m.group(2)) or _TL_ONE_WAY[m.group(2)]}"
    m = _SP_BLOCK.match(name)
    if m and m.group(2) in _SP_SUB:
        kind = _SP_SUB[m.group(2)]
        if transcoder_input:
            kind = {"mlp_out": "mlp_in", "resid_post": "resid_pre"}.get(kind)   # attention's input: post-LN
            if kind is None:
                return ""
        return f"blocks.{m.group(1)}.{kind}"
    if re.match(r"^(?:model\.|transformer\.)?(?:embed_tokens|wte)$", name):
        return "embed"
    return ""


def sparsify_output_site(hookpoint: str) -> str:
    """A sparsify transcoder's output site: the output of the module its hookpoint names."""
    return to_site(hookpoint, transcoder_input=False)


def to_transformerlens(site: str) -> str:
    """TransformerLens hook name of an actlab site (the site itself where TransformerLens has none)."""
    m = re.match(r"^blocks\.(\d+)\.(.+)$", site or "")
    if m and m.group(2) in _KIND_TO_TL:
        return f"blocks.{m.group(1)}.{_KIND_TO_TL[m.group(2)]}"
    return {v: k for k, v in _TL_GLOBAL.items()}.get(site, site)


def to_sparsify(site: str, site_out: str = "") -> str:
    """sparsify hookpoint (HF module path, base-model prefix dropped) for an actlab site, or the site itself."""
    m = re.match(r"^blocks\.(\d+)\.(.+)$", site or "")
    if not m:
        return site
    i, kind = m.groups()
    if site_out:
        mo = re.match(r"^blocks\.(\d+)\.(.+)$", site_out)
        if (kind, mo and mo.groups()) == ("mlp_in", (i, "mlp_out")):
            return f"layers.{i}.mlp"
        return site
    return {"resid_post": f"layers.{i}", "mlp_out": f"layers.{i}.mlp", "attn_out": f"layers.{i}.self_attn"}.get(
        kind, site)
