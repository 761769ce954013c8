"""``actlab patch activation|attribution|path|subspace``: causal patching from the command line.

Each verb takes a model, clean/corrupted prompt pairs and the answer tokens of a logit-difference metric, and
writes a result folder (``result.json`` + ``result.safetensors`` + ``heatmap.png``, or ``effect.json`` +
``basis.safetensors``). This file only declares flags and calls ``actlab.patch``.
"""
from __future__ import annotations

import argparse
import json

from actlab import clikit


def _common(p: argparse.ArgumentParser) -> None:
    clikit.add_model_args(p)
    p.add_argument("--clean", action="append", required=True, help="clean prompt (repeatable; one per pair)")
    p.add_argument("--corrupt", action="append", required=True,
                   help="corrupted prompt (repeatable; same token count as its clean prompt unless --align right)")
    p.add_argument("--correct", required=True, help="answer the clean prompt favours (its first token is used)")
    p.add_argument("--incorrect", required=True, help="answer the corrupted prompt favours (first token)")
    p.add_argument("--align", default="strict", choices=["strict", "right"],
                   help="strict: pairs must tokenize to equal length; right: line up the final tokens")
    p.add_argument("--out", default=None, help="output folder (default: print only)")


def _grid(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sites", action="append", default=None,
                   help=f"{clikit.SITES_HELP} (default blocks.*.resid_pre)")
    p.add_argument("--positions", default="each",
                   help=f"each (one cell per token column, the default) or {clikit.POSITIONS_HELP}")
    p.add_argument("--heads", action="store_true", help="per-head cells on attn.z sites")
    p.add_argument("--direction", default="denoise", choices=["denoise", "noise"],
                   help="denoise: clean activations into the corrupted run; noise: the reverse")


def register(sub) -> None:
    p = sub.add_parser("patch", help="activation / attribution / path / subspace patching",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = clikit.subcommands(p, dest="verb", metavar="VERB", required=True)

    a = verbs.add_parser("activation", help="exact patching sweep over sites x positions (x heads), batched")
    _common(a)
    _grid(a)
    a.add_argument("--batch-size", type=int, default=64, help="patch cells per forward pass (default 64)")
    a.set_defaults(func=cmd_grid, grid_method="activation")

    b = verbs.add_parser("attribution", help="attribution patching (gradient estimate) over the same grid")
    _common(b)
    _grid(b)
    b.set_defaults(func=cmd_grid, grid_method="attribution")

    c = verbs.add_parser("path", help="path patching (noising) from a sender to receivers")
    _common(c)
    c.add_argument("--sender", action="append", required=True,
                   help="sender component: SITE or SITE#HEAD (repeatable: one result per sender)")
    c.add_argument("--receiver", action="append", required=True,
                   help="receiver input (repeatable): e.g. blocks.3.attn.q#2, blocks.3.mlp_in, "
                        "blocks.{last}.resid_post (direct path to the logits)")
    c.add_argument("--freeze", action="append", default=None,
                   help="frozen component outputs, comma separated or repeated (default all attn.z, mlp_out)")
    c.set_defaults(func=cmd_path)

    d = verbs.add_parser("subspace", help="subspace patching / DAS with the dormant-pathway illusion check")
    _common(d)
    d.add_argument("--site", default=None, help="site to patch (e.g. blocks.3.mlp_act); default: the site of a "
                                                 "steer direction given with --direction-file")
    d.add_argument("--direction-file", default=None,
                   help="a steer direction folder (actlab steer extract / Direction.save), or a safetensors file with "
                        "a 'direction' tensor [d] or [k, d]")
    d.add_argument("--das", type=int, default=0, help="learn a k-dim subspace with DAS instead (k)")
    d.add_argument("--steps", type=int, default=100, help="DAS optimisation steps (default 100)")
    d.add_argument("--lr", type=float, default=0.05, help="DAS learning rate")
    d.add_argument("--positions", default="last", help=f"positions patched (default last): {clikit.POSITIONS_HELP}")
    d.set_defaults(func=cmd_subspace)


def _setup(a):
    """(model, metric, answer ids) for a patch verb; notes about multi-token answers are printed."""
    from actlab.patch import LogitDiff, answer_id

    if len(a.clean) != len(a.corrupt):
        raise ValueError(f"got {len(a.clean)} --clean and {len(a.corrupt)} --corrupt prompts; give one corrupted "
                         f"prompt per clean prompt")
    m = clikit.model_from_args(a)
    (good, n1), (bad, n2) = answer_id(m, a.correct), answer_id(m, a.incorrect)
    for note in (n1, n2):
        if note:
            print(f"note: {note}")
    return m, LogitDiff(good, bad), good


def _print_result(r) -> None:
    print(r.describe())
    print(f"clean {r.clean:.4f}  corrupt {r.corrupt:.4f}  grid {dict(zip(r.dims, r.values.shape))}")
    for v, name in r.top_cells(10):
        print(f"  {v:+.3f}  {name}")


def cmd_grid(a) -> None:
    from actlab.patch import activation_patch, attribution_patch

    m, met, _ = _setup(a)
    pos = a.positions if a.positions == "each" else clikit.parse_positions(a.positions)
    sites = clikit.parse_sites(m, a.sites or "blocks.*.resid_pre")
    kw = dict(positions=pos, heads=a.heads, direction=a.direction, align=a.align)
    if a.grid_method == "activation":
        r = activation_patch(m, a.clean, a.corrupt, met, sites, batch_size=a.batch_size, progress=True, **kw)
    else:
        r = attribution_patch(m, a.clean, a.corrupt, met, sites, **kw)
    _print_result(r)
    if a.out:
        r.save(a.out)
        print(f"wrote {a.out}/result.json, result.safetensors, heatmap.png")


def cmd_path(a) -> None:
    from actlab.patch import path_patch_prompts

    m, met, _ = _setup(a)
    freeze = clikit.split_list(a.freeze) if a.freeze else None
    r = path_patch_prompts(m, a.clean, a.corrupt, met, a.sender, a.receiver, freeze=freeze, align=a.align,
                           progress=True)
    print(f"{r.describe()}: the sender's corrupted output reaches only the receivers {a.receiver}")
    print(f"clean {r.clean:.4f}  corrupt {r.corrupt:.4f}  (normalised 1 = fully corrupted behaviour)")
    for s, v, n in zip(r.labels["sender"], r.values.tolist(), r.normalized.tolist()):
        print(f"  {s}: metric {v:.4f}  normalised {n:+.3f}")
    if a.out:
        r.save(a.out)
        print(f"wrote {a.out}")


def cmd_subspace(a) -> None:
    from actlab.patch import subspace_experiment

    if not a.direction_file and not a.das:
        raise ValueError("give --direction-file or --das K")
    m, met, good = _setup(a)
    rep = subspace_experiment(m, a.clean, a.corrupt, met, a.site, basis=a.direction_file, das_k=a.das,
                              das_target=good, steps=a.steps, lr=a.lr, positions=clikit.parse_positions(a.positions),
                              align=a.align, progress=True)
    for note in rep.notes:
        print(f"note: {note}")
    if rep.das_losses:
        print(f"DAS loss {rep.das_losses[0]:.4f} -> {rep.das_losses[-1]:.4f}")
    print(f"subspace patch at {rep.site}: normalised effect {rep.effect.normalized:+.3f} (whole site: "
          f"{rep.full.normalized:+.3f})")
    if rep.illusion is not None:
        i = rep.illusion
        print(f"illusion check (first direction): row {i['effect_row']:+.3f}  null {i['effect_null']:+.3f}  "
              f"flags {i['flags'] or 'none'}")
    if a.out:
        rep.save(a.out)
        print(f"wrote {a.out}/effect.json, basis.safetensors")
    print(json.dumps({k: v for k, v in rep.to_dict().items() if k not in ("illusion_check", "notes")}))
