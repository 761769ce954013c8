"""``actlab patch activation|attribution|path|subspace``: causal patching from the command line.

Each verb takes a model, clean/corrupted prompt pairs and the answer tokens of a logit-difference metric, and
writes a result folder (``result.json`` + ``result.safetensors`` + ``heatmap.png``, or ``effect.json``).
"""
from __future__ import annotations

import argparse


def _common(p: argparse.ArgumentParser, pairs: bool = True) -> None:
    p.add_argument("model", help="bundled name (smollm2-135m-instruct, tiny-llama, ...), HF folder or .gguf")
    p.add_argument("--dtype", default="fp32", help="model dtype: fp32, bf16, fp16 (default fp32)")
    p.add_argument("--device", default=None, help="torch device (default cpu)")
    p.add_argument("--clean", action="append", required=True, help="clean prompt (repeatable; one per pair)")
    p.add_argument("--corrupt", action="append", required=True,
                   help="corrupted prompt (repeatable; same token count as its clean prompt unless --align right)")
    p.add_argument("--correct", required=True, help="answer the clean prompt favours (its first token is used)")
    p.add_argument("--incorrect", required=True, help="answer the corrupted prompt favours (first token)")
    p.add_argument("--align", default="strict", choices=["strict", "right"],
                   help="strict: pairs must tokenize to equal length; right: line up the final tokens")
    p.add_argument("--out", default=None, help="output folder (default: print only)")


def _grid(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sites", default="blocks.*.resid_pre",
                   help="comma-separated sites; '*' expands over layers (default blocks.*.resid_pre)")
    p.add_argument("--positions", default="each",
                   help="each (one cell per token), all (whole site), or comma-separated token indices")
    p.add_argument("--heads", action="store_true", help="per-head cells on attn.z sites")
    p.add_argument("--direction", default="denoise", choices=["denoise", "noise"],
                   help="denoise: clean activations into the corrupted run; noise: the reverse")


def register(sub) -> None:
    p = sub.add_parser("patch", help="activation / attribution / path / subspace patching",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    a = verbs.add_parser("activation", help="exact patching sweep over sites x positions (x heads), batched")
    _common(a)
    _grid(a)
    a.add_argument("--batch-size", type=int, default=64, help="patch cells per forward pass (default 64)")
    a.set_defaults(func=cmd_grid, method="activation")

    b = verbs.add_parser("attribution", help="attribution patching (gradient estimate) over the same grid")
    _common(b)
    _grid(b)
    b.set_defaults(func=cmd_grid, method="attribution")

    c = verbs.add_parser("path", help="path patching from a sender to receivers")
    _common(c)
    c.add_argument("--sender", action="append", required=True,
                   help="sender component: SITE or SITE#HEAD (repeatable: one result per sender)")
    c.add_argument("--receiver", action="append", required=True,
                   help="receiver input (repeatable): e.g. module:model.layers.3.self_attn.q_proj#2, "
                        "blocks.3.mlp_in, blocks.{last}.resid_post (direct path to the logits)")
    c.add_argument("--freeze", default=None, help="comma-separated frozen component outputs (default all attn.z, "
                                                   "mlp_out)")
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
    d.add_argument("--positions", default="last", help="positions patched: last, all or an index (default last)")
    d.set_defaults(func=cmd_subspace)


def _load(a):
    from actlab import load_model

    m = load_model(a.model, dtype=a.dtype, device=a.device)
    if len(a.clean) != len(a.corrupt):
        raise SystemExit(f"error: got {len(a.clean)} --clean and {len(a.corrupt)} --corrupt prompts; give one "
                         f"corrupted prompt per clean prompt")
    return m


def _answer_id(m, text: str) -> int:
    ids = m.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise SystemExit(f"error: answer {text!r} tokenizes to nothing")
    if len(ids) > 1:
        print(f"note: answer {text!r} is {len(ids)} tokens; using the first ({m.tokenizer.decode(ids[:1])!r})")
    return ids[0]


def _metric(m, a):
    from actlab.patch import LogitDiff

    return LogitDiff(_answer_id(m, a.correct), _answer_id(m, a.incorrect))


def cmd_grid(a) -> None:
    from actlab.patch import activation_patch, attribution_patch

    m = _load(a)
    pos = a.positions if a.positions in ("each", "all") else [int(x) for x in a.positions.split(",")]
    sites = [s for s in a.sites.split(",") if s]
    kw = dict(positions=pos, heads=a.heads, direction=a.direction, align=a.align)
    try:
        if a.method == "activation":
            r = activation_patch(m, a.clean, a.corrupt, _metric(m, a), sites, batch_size=a.batch_size, progress=True,
                                 **kw)
        else:
            r = attribution_patch(m, a.clean, a.corrupt, _metric(m, a), sites, **kw)
    except (ValueError, KeyError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"{r.describe()}")
    print(f"clean {r.clean:.4f}  corrupt {r.corrupt:.4f}  grid {dict(zip(r.dims, r.values.shape))}")
    try:
        norm = r.normalized
        flat = norm.flatten()
        names = [""]
        for d in r.dims:
            names = [f"{x} | {y}" if x else y for x in names for y in r.labels[d]]
        for i in flat.abs().topk(min(10, flat.numel())).indices.tolist():
            print(f"  {flat[i]:+.3f}  {names[i]}")
    except ValueError as e:
        print(f"  ({e})")
    if a.out:
        r.save(a.out)
        print(f"wrote {a.out}/result.json, result.safetensors, heatmap.png")


def cmd_path(a) -> None:
    from actlab.patch import PatchResult, path_patch_sweep  # noqa: F401

    m = _load(a)
    met = _metric(m, a)
    if len(a.clean) != 1:
        raise SystemExit("error: path patching takes one --clean/--corrupt pair")
    from actlab.patch.common import make_pairs

    pairs = make_pairs(m, a.clean, a.corrupt, align=a.align)
    base, source = pairs.inputs("clean"), pairs.inputs("corrupt")

    def score(out):
        logits = out.logits[:, -1]
        import torch

        return met(logits, torch.zeros(logits.shape[0], dtype=torch.long))
    freeze = [s for s in a.freeze.split(",") if s] if a.freeze else None
    try:
        r = path_patch_sweep(m, base, source, a.sender, a.receiver, score, freeze=freeze, metric_name="logit_diff")
    except (ValueError, KeyError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"{r.describe()}: the sender's corrupted output reaches only the receivers {a.receiver}")
    print(f"clean {r.clean:.4f}  corrupt {r.corrupt:.4f}  (normalised 1 = fully corrupted behaviour)")
    for s, v, n in zip(r.labels["sender"], r.values.tolist(), r.normalized.tolist()):
        print(f"  {s}: metric {v:.4f}  normalised {n:+.3f}")
    if a.out:
        r.save(a.out)
        print(f"wrote {a.out}")


def cmd_subspace(a) -> None:
    import json

    from actlab.patch import subspace_experiment

    m = _load(a)
    if not a.direction_file and not a.das:
        raise SystemExit("error: give --direction-file or --das K")
    pos = a.positions if a.positions in ("last", "all") else int(a.positions)
    try:
        rep = subspace_experiment(m, a.clean, a.corrupt, _metric(m, a), a.site, basis=a.direction_file, das_k=a.das,
                                  das_target=_answer_id(m, a.correct), steps=a.steps, lr=a.lr, positions=pos,
                                  align=a.align, progress=True)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
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
