"""``actlab steer extract|apply|sweep|generate``: steering as a measured workflow from the command line."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _lines(path: str | None, what: str) -> list:
    """Prompts from a .txt (one per line), .json (a list, or {"instructions": [...]}) or .jsonl file."""
    if not path:
        return []
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"error: {what} file {p} does not exist")
    if p.suffix == ".json":
        data = json.loads(p.read_text())
        data = data.get("instructions", data.get("prompts")) if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise SystemExit(f"error: {p} must hold a JSON list (or an object with 'instructions')")
        return data
    if p.suffix == ".jsonl":
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return [line for line in p.read_text().splitlines() if line.strip()]


def _pairs(a) -> tuple[list, list]:
    if a.pairs:
        rows = _lines(a.pairs, "--pairs")
        try:
            return [r["positive"] for r in rows], [r["negative"] for r in rows]
        except (KeyError, TypeError):
            raise SystemExit("error: --pairs must be JSONL with {\"positive\": ..., \"negative\": ...} per line")
    pos, neg = _lines(a.positive, "--positive"), _lines(a.negative, "--negative")
    if not pos or not neg:
        raise SystemExit("error: give --pairs, or both --positive and --negative")
    return pos, neg


def _model(a):
    from actlab import load_model

    return load_model(a.model, dtype=a.dtype, device=a.device)


def _sites(a, model) -> list[str]:
    if a.site:
        return [s for arg in a.site for s in arg.split(",") if s]
    layers = range(model.n_layers) if a.layers == "all" else [int(x) for x in a.layers.split(",")]
    return [f"blocks.{i}.resid_post" for i in layers]


def cmd_extract(a) -> None:
    from actlab.steer.directions import ExtractConfig, extract

    m = _model(a)
    pos, neg = _pairs(a)
    cfg = ExtractConfig(method=a.method, position=a.position, chat=a.chat, mask_massive=a.mask_massive)
    dirs = extract(m, pos, neg, _sites(a, m), cfg)
    out = Path(a.out)
    for s, d in dirs.items():
        folder = d.save(out / s if len(dirs) > 1 else out)
        print(f"{s}: |v|={d.norms['vector']:.3f} median |h|={d.norms['resid_median']:.3f} -> {folder}")


def cmd_apply(a) -> None:
    from actlab.steer.directions import Direction

    d = Direction.load(a.direction)
    if a.orthogonalize:
        from actlab.steer.apply import orthogonalize_model

        m = _model(a)
        out = orthogonalize_model(m, d.vector, a.orthogonalize, meta={"direction": str(a.direction)})
        print(f"wrote edited model folder {out}")
        return
    path = d.save_interventions(a.out, alpha=a.alpha, mode=a.mode, scale=a.scale)
    print(f"wrote {path} (replay: actlab generate {d.model or 'MODEL'} --intervention {path})")


def cmd_sweep(a) -> None:
    from actlab.steer.directions import ExtractConfig, extract
    from actlab.steer.evaluate import EmbeddingScorer, KeywordScorer
    from actlab.steer.sweep import SweepConfig, sweep

    m = _model(a)
    pos, neg = _pairs(a)
    prompts = _lines(a.prompts, "--prompts")
    if not prompts:
        raise SystemExit("error: --prompts is required (unrelated prompts to generate from)")
    if a.keywords:
        scorer = KeywordScorer([k for k in a.keywords.split(",") if k])
    elif a.target:
        scorer = EmbeddingScorer(a.target)
    else:
        raise SystemExit("error: give --keywords or --target (a description scored with MiniLM)")
    dirs = extract(m, pos, neg, _sites(a, m), ExtractConfig(method=a.method, position=a.position, chat=a.chat))
    cfg = SweepConfig(strengths=[float(x) for x in a.strengths.split(",")], scale=a.scale, mode=a.mode,
                      max_new_tokens=a.max_new_tokens, chat=a.chat, max_ppl_ratio=a.max_ppl_ratio)
    res = sweep(m, dirs, prompts, scorer, neutral=_lines(a.neutral, "--neutral") or None, cfg=cfg)
    folder = res.save(a.out)
    b = res.baseline
    print(f"unsteered: concept {b.concept:.3f} ppl {b.ppl:.2f}")
    for r in res.rows:
        print(f"{r.site:>22} x{r.strength:<6g} concept {r.concept:.3f} ppl {r.ppl:8.2f} KL {r.kl:.4f}")
    if res.best:
        print(f"best: {res.best.site} strength {res.best.strength:g} ({a.scale}) concept {res.best.concept:.3f} "
              f"ppl {res.best.ppl:.2f}")
        print(f"wrote {folder}/best.json, best_direction/ and best_interventions.json")
    else:
        print(f"no setting qualified (see {folder}/best.json)")
    print(f"wrote {folder}/sweep.json and tradeoff.png")


def cmd_generate(a) -> None:
    from actlab.steer.directions import Direction

    m = _model(a)
    ivs = []
    if a.direction:
        ivs = Direction.load(a.direction).to_interventions(a.alpha, mode=a.mode, scale=a.scale)
    with m.intervene(ivs):
        if a.sla_layers:
            from actlab.steer.sla import sla_generate

            outs = sla_generate(m, a.prompt, a.max_new_tokens, sla_layers=[int(x) for x in a.sla_layers.split(",")],
                            sla_alpha=a.sla_alpha, chat=a.chat)
        else:
            outs = m.generate(a.prompt, max_new_tokens=a.max_new_tokens, chat=a.chat)
    for p, o in zip(a.prompt, outs):
        print(f"### {p}\n{o}\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="bundled name (smollm2-135m-instruct, tiny-*), HF folder or .gguf")
    p.add_argument("--dtype", default="fp32", help="model dtype: fp32, bf16, fp16")
    p.add_argument("--device", default=None, help="torch device (default cpu)")


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", help='JSONL, one {"positive": text, "negative": text} per line')
    p.add_argument("--positive", help="positive prompts (.txt one per line, .json list)")
    p.add_argument("--negative", help="negative prompts (.txt one per line, .json list)")
    p.add_argument("--site", action="append", help="site name(s), comma separated (default: --layers resid_post)")
    p.add_argument("--layers", default="all", help="'all' or comma-separated block indices (resid_post sites)")
    p.add_argument("--method", default="mean_diff", choices=["mean_diff", "pca", "probe"],
                   help="mean_diff (CAA), pca (RepE PC1 of paired differences) or probe (logistic regression)")
    p.add_argument("--position", default="last", choices=["last", "mean", "post_inst", "response_mean"],
                   help="which tokens each example contributes")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the model's chat template")


def _how(p: argparse.ArgumentParser, alpha: bool = True) -> None:
    if alpha:
        p.add_argument("--alpha", type=float, default=1.0, help="strength (in --scale units)")
    p.add_argument("--scale", default="raw", choices=["raw", "unit", "resid"],
                   help="raw vector, unit vector, or units of the median residual norm at the site")
    p.add_argument("--mode", default="add", choices=["add", "norm_add", "prompt_add", "ablate", "ablate_all"],
                   help="how to apply the direction")


def register(subparsers) -> None:
    sp = subparsers.add_parser("steer", help="steering directions: extract, apply, sweep, generate")
    sub = sp.add_subparsers(dest="steer_cmd", metavar="VERB")
    sp.set_defaults(func=lambda a: sp.print_help())

    p = sub.add_parser("extract", help="extract direction(s) from contrast data; saves safetensors + JSON")
    _common(p)
    _data(p)
    p.add_argument("--mask-massive", type=float, default=None,
                   help="zero channels whose mean |act| exceeds this multiple of the median channel's")
    p.add_argument("--out", required=True, help="output folder (one subfolder per site when several)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("apply", help="turn a direction into a replayable interventions file, or bake an ablation "
                                     "into the weights (--orthogonalize)")
    p.add_argument("direction", help="direction folder written by 'steer extract'")
    p.add_argument("--model", default=None, help="model to orthogonalise (with --orthogonalize)")
    p.add_argument("--dtype", default="fp32", help="model dtype")
    p.add_argument("--device", default=None, help="torch device")
    _how(p)
    p.add_argument("--out", default="steer.json", help="interventions JSON to write")
    p.add_argument("--orthogonalize", metavar="OUT_DIR", help="write an edited model folder with the direction "
                                                              "removed from every residual write")
    p.set_defaults(func=_apply_entry)

    p = sub.add_parser("sweep", help="sweep layers x strengths; score concept and fluency; plot and pick the best")
    _common(p)
    _data(p)
    p.add_argument("--prompts", required=True, help="unrelated prompts to generate from (.txt/.json)")
    p.add_argument("--neutral", help="neutral prompts for the KL cost (default: --prompts)")
    p.add_argument("--keywords", help="comma-separated concept keywords (keyword scorer)")
    p.add_argument("--target", help="target description (MiniLM cosine scorer)")
    p.add_argument("--strengths", default="0.25,0.5,1,2,4", help="comma-separated strengths (in --scale units)")
    p.add_argument("--scale", default="resid", choices=["raw", "unit", "resid"], help="units of the strengths")
    p.add_argument("--mode", default="add", choices=["add", "norm_add", "prompt_add"], help="how to apply")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--max-ppl-ratio", type=float, default=2.0, help="fluency bound for the best setting")
    p.add_argument("--out", required=True, help="output folder: sweep.json, tradeoff.png, best_direction/")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("generate", help="generate with a saved direction (and optional self-logits augmentation)")
    _common(p)
    p.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    p.add_argument("--direction", help="direction folder written by 'steer extract'")
    _how(p)
    p.add_argument("--sla-layers", help="comma-separated layers for self-logits augmentation (VISTA)")
    p.add_argument("--sla-alpha", type=float, default=0.3, help="SLA mix weight")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--chat", action="store_true", help="apply the chat template")
    p.set_defaults(func=cmd_generate)


def _apply_entry(a) -> None:
    if a.orthogonalize and not a.model:
        raise SystemExit("error: --orthogonalize needs --model")
    cmd_apply(a)
