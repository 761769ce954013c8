"""Attribution patching: a first-order estimate of every activation-patching cell from one backward pass.

``metric(patched) ~ metric(base) + sum (a_source - a_base) * d metric / d a_base`` over the cell's entries, so the
whole sites x positions (x heads) grid costs 2 forwards + 1 backward (the source run, the base run with grad).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from actlab.patch.activation import position_cells
from actlab.patch.common import MetricLike, PatchResult, PromptPairs, last_logits, make_pairs, site_list

if TYPE_CHECKING:
    from actlab.models import Model


def grad_record(m: Model, inputs: dict, sites: list[str], metric: MetricLike) -> tuple[dict, dict, torch.Tensor]:
    """One forward + backward: ``(acts, grads, metric_per_row)`` for the sites (grads of ``metric.sum()``), through
    the core's ``model.recording(sites, grad=True)``."""
    with m.recording(sites, grad=True) as rec:
        logits = last_logits(m, inputs)
        rows = torch.arange(logits.shape[0], device=logits.device)
        vals = metric(logits, rows)
        missing = [s for s in sites if s not in rec]
        if missing:
            raise RuntimeError(f"sites {missing} were not reached by the forward pass")
        vals.sum().backward()
    acts = {s: rec[s].detach() for s in sites}
    grads = {s: rec.grad(s).detach() for s in sites}
    return acts, grads, vals.detach()


def attribution_patch(m: Model, clean, corrupt=None, metric: MetricLike = None, sites="blocks.*.resid_pre", *,
                      positions="each", heads: bool = False, direction: str = "denoise",
                      align: str = "strict") -> PatchResult:
    """Linear estimate of ``activation_patch`` over the same grid; same arguments, same result layout.

    The values are estimated metrics (``metric(base) + attribution``), so ``normalized`` reads like the exact sweep.
    """
    if metric is None:
        raise ValueError("attribution_patch needs a metric, e.g. LogitDiff(correct_id, incorrect_id)")
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction must be 'denoise' or 'noise', got {direction!r}")
    pairs = clean if isinstance(clean, PromptPairs) else make_pairs(m, clean, corrupt, align=align)
    sites = site_list(m, sites)
    base, src_name = ("corrupt", "clean") if direction == "denoise" else ("clean", "corrupt")
    rows = torch.arange(pairs.n, device=pairs.clean_ids.device)
    with torch.no_grad(), m.recording(sites) as rec:  # forward 1: source activations + source metric
        src_metric = metric(last_logits(m, pairs.inputs(src_name)), rows).float()
    source = rec.to_dict()
    acts, grads, base_metric = grad_record(m, pairs.inputs(base), sites, metric)  # forward 2 + backward
    pos_groups, pos_labels = position_cells(pairs.width, positions)
    if pos_labels is None:
        all_labels = pairs.position_labels()
        pos_labels = [all_labels[g[0]] for g in pos_groups]
    per_site = []
    n_heads = None
    for s in sites:
        contrib = (source[s] - acts[s]) * grads[s]  # [n, P, ...]
        if heads:
            if contrib.dim() != 4:
                raise ValueError(f"heads=True needs per-head sites ([batch, pos, head, d_head], e.g. "
                                 f"'blocks.0.attn.z'); {s!r} has shape {list(contrib.shape)}")
            n_heads = contrib.shape[2]
            c = contrib.float().sum(-1)  # [n, P, H]
        else:
            c = contrib.float().flatten(2).sum(-1)  # [n, P]
        cells = torch.stack([c[:, list(g)].sum(1) for g in pos_groups], 1)  # [n, G(, H)]
        per_site.append(cells.movedim(0, -1))  # [G(, H), n]
    est = torch.stack(per_site, 0) + base_metric.float().cpu().view(*([1] * per_site[0].dim()), -1).to(
        per_site[0].device)
    dims = ("site", "position") + (("head",) if heads else ())
    labels = {"site": sites, "position": pos_labels}
    if heads:
        labels["head"] = [str(h) for h in range(n_heads)]
    clean_v = (src_metric if src_name == "clean" else base_metric).float().mean().item()
    corrupt_v = (base_metric if src_name == "clean" else src_metric).float().mean().item()
    est = est.cpu()
    return PatchResult(est.mean(-1), dims, labels, clean_v, corrupt_v, getattr(metric, "name", "metric"),
                       "attribution", direction, est, {"width": pairs.width, "n_pairs": pairs.n,
                                                       "passes": "2 forward + 1 backward"})
