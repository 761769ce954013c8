"""``actlab steer extract|apply|sweep|generate``: flags (from the config dataclasses via actlab.clikit) and calls
into the library; no logic here. Errors are raised as ordinary exceptions (``actlab.cli.main`` prints them)."""
from __future__ import annotations

import argparse

from actlab import clikit


def cmd_extract(a: argparse.Namespace) -> None:
    from actlab.steer import extract
    from actlab.steer.inputs import layer_sites, read_contrast

    m = clikit.model_from_args(a)
    pos, neg = read_contrast(a.pairs, a.positive, a.negative)
    sites = clikit.parse_sites(m, a.site) if a.site else layer_sites(m, a.layers)
    dirs = extract(m, pos, neg, sites, clikit.config_from_args(a))
    for s, d in dirs.items():
        folder = d.save(f"{a.out}/{s}" if len(dirs) > 1 else a.out)
        print(f"{s}: |v|={d.norms['vector']:.3f} median |h|={d.norms['resid_median']:.3f} -> {folder}")


def cmd_apply(a: argparse.Namespace) -> None:
    from actlab.steer import Direction, orthogonalize_model

    d = Direction.load(a.direction)
    if a.orthogonalize:
        if not a.model:
            raise ValueError("--orthogonalize needs --model (the model whose weights are edited)")
        out = orthogonalize_model(clikit.model_from_args(a), d.vector, a.orthogonalize,
                                  meta={"direction": str(a.direction)})
        print(f"wrote edited model folder {out}")
        return
    path = d.save_interventions(a.out, alpha=a.alpha, mode=a.mode, scale=a.scale)
    print(f"wrote {path} (replay: actlab generate {d.model or 'MODEL'} --intervention {path})")


def cmd_sweep(a: argparse.Namespace) -> None:
    from actlab.steer import ExtractConfig, extract, sweep
    from actlab.steer.evaluate import make_scorer
    from actlab.steer.inputs import layer_sites, read_contrast, read_prompts

    m = clikit.model_from_args(a)
    cfg = clikit.config_from_args(a)
    pos, neg = read_contrast(a.pairs, a.positive, a.negative)
    prompts = read_prompts(a.prompts, "--prompts")
    scorer = make_scorer(clikit.split_list(a.keywords), a.target)
    sites = clikit.parse_sites(m, a.site) if a.site else layer_sites(m, a.layers)
    dirs = extract(m, pos, neg, sites, ExtractConfig(method=a.method, position=a.position, chat=cfg.chat))
    neutral = read_prompts(a.neutral, "--neutral") if a.neutral else None
    res = sweep(m, dirs, prompts, scorer, neutral=neutral, cfg=cfg)
    folder = res.save(a.out)
    b = res.baseline
    print(f"unsteered: concept {b.concept:.3f} ppl {b.ppl:.2f}")
    for r in res.rows:
        print(f"{r.site:>22} x{r.strength:<6g} concept {r.concept:.3f} ppl {r.ppl:8.2f} KL {r.kl:.4f}")
    if res.best:
        print(f"best: {res.best.site} strength {res.best.strength:g} ({cfg.scale}) concept {res.best.concept:.3f} "
              f"ppl {res.best.ppl:.2f}; wrote {folder}/best.json, best_direction/ and best_interventions.json")
    else:
        print(f"no setting qualified (see {folder}/best.json)")
    print(f"wrote {folder}/sweep.json and tradeoff.png")


def cmd_generate(a: argparse.Namespace) -> None:
    from actlab.steer import Direction, sla_generate

    m = clikit.model_from_args(a)
    ivs = Direction.load(a.direction).to_interventions(a.alpha, mode=a.mode, scale=a.scale) if a.direction else []
    layers = [int(x) for x in clikit.split_list(a.sla_layers)]
    with m.intervene(ivs):
        outs = sla_generate(m, a.prompt, a.max_new_tokens, sla_layers=layers, sla_alpha=a.sla_alpha, chat=a.chat)
    for p, o in zip(a.prompt, outs):
        print(f"### {p}\n{o}\n")


def cmd_grains(a: argparse.Namespace) -> None:
    from actlab.steer import grains
    from actlab.steer.grains import contrast
    from actlab.steer.inputs import read_triples

    m = clikit.model_from_args(a)
    triples = read_triples(a.triples, a.prompt, a.preferred, a.dispreferred)
    res = grains(m, triples, clikit.config_from_args(a))
    folder = res.save(a.out)
    for toks, tp, tn in zip(res.tokens, res.top_pos, res.top_neg):
        print(f"pro {[toks[i] for i in tp[:3]]}  con {[toks[i] for i in tn[:3]]}")
    lams = [float(x) for x in clikit.split_list(a.lam)]
    for s, d in res.vectors.items():
        line = f"{s}: |delta|={d.norms['vector']:.3f}"
        if lams:
            fs = contrast(m, d, triples, [0.0, *lams])
            line += "  mean f=log p(y+)-log p(y-): " + ", ".join(f"lam {x:g}: {f:+.3f}" for x, f in zip([0, *lams], fs))
        print(line)
    print(f"wrote {folder} (one direction folder per site; apply with mode norm_add) and attributions.json")


def cmd_refusal(a: argparse.Namespace) -> None:
    from actlab.steer.inputs import read_prompts
    from actlab.steer.refusal import effects, harm_refusal_directions, load_instructions

    m = clikit.model_from_args(a)
    harmful = read_prompts(a.harmful, "--harmful") if a.harmful else load_instructions("harmful")
    harmless = read_prompts(a.harmless, "--harmless") if a.harmless else load_instructions("harmless")
    if a.n:
        harmful, harmless = harmful[:a.n], harmless[:a.n]
    layers = [int(x) for x in clikit.split_list(a.layers)]
    res = harm_refusal_directions(m, harmful, harmless, layers, judge=a.judge, max_new_tokens=a.max_new_tokens)
    for s in res.harm:
        res.harm[s].save(f"{a.out}/harm/{s}")
        res.refusal[s].save(f"{a.out}/refusal/{s}")
        print(f"{s}: cos(d_harm, d_ref) = {res.cos[s]:+.3f}  |d_harm| {res.harm[s].norms['vector']:.2f}  "
              f"|d_ref| {res.refusal[s].norms['vector']:.2f}  median |h| {res.harm[s].norms['resid_median']:.1f}")
    if a.effects:
        eff = effects(m, res, harmful, harmless, a.coeff, prompt_only=a.prompt_only)
        b = eff.pop("base")
        print(f"unsteered: refusal score harmful {b['refusal_H']:+.2f} harmless {b['refusal_L']:+.2f}; "
              f"judgement harmful {b['judge_H']:+.2f} harmless {b['judge_L']:+.2f}")
        for s, r in eff.items():
            print(f"{s}: add x{a.coeff:g} on harmless -> refusal {r['add_harm_refusal']:+.2f} (harm) "
                  f"{r['add_ref_refusal']:+.2f} (ref), judgement {r['add_harm_judge']:+.2f} (harm) "
                  f"{r['add_ref_judge']:+.2f} (ref); ablate on harmful -> refusal {r['ablate_harm_refusal']:+.2f} "
                  f"(harm) {r['ablate_ref_refusal']:+.2f} (ref)")
    print(f"wrote {a.out}/harm/<site> and {a.out}/refusal/<site> (steer with 'actlab steer apply')")


def cmd_vista(a: argparse.Namespace) -> None:
    from actlab.steer.sla import ranking_dynamics, sla_generate, vsv_compare, vsv_interventions

    m = clikit.model_from_args(a)
    r = vsv_compare(m, a.context, a.question, a.lam, a.target)
    print(f"next-token KL to the with-context run: {r['kl_no_context']:.4f} without context, "
          f"{r['kl_steered']:.4f} steered (lam {a.lam:g})")
    if a.target:
        print(f"p({a.target!r}): context {r['p_context']:.4f}  no context {r['p_no_context']:.4f}  "
              f"steered {r['p_steered']:.4f}")
        for k in ("ranks_context", "ranks_no_context", "ranks_steered"):
            print(f"  rank per layer, {k[6:]:>10}: {' '.join(str(x) for x in r[k])}")
    layers = [int(x) for x in clikit.split_list(a.sla_layers)]
    for name, ivs in (("plain", {}), ("steered", vsv_interventions(m, [a.context + a.question], [a.question], a.lam))):
        with m.intervene(ivs):
            out = sla_generate(m, [a.question], a.max_new_tokens, sla_layers=layers, sla_alpha=a.sla_alpha)[0]
            toks, ranks = ranking_dynamics(m, a.question, a.ranks_tokens) if a.ranks_tokens else ([], None)
        print(f"### {name}: {a.question}{out}")
        for j, t in enumerate(toks):
            print(f"  {t!r:>12} rank per layer: {' '.join(str(int(x)) for x in ranks[:, j])}")


def cmd_mote(a: argparse.Namespace) -> None:
    from actlab.artifact import atomic_write_json
    from actlab.steer.inputs import read_prompts
    from actlab.steer.mote import ftri, switch, to_json
    from actlab.steer.refusal import is_refusal

    m = clikit.model_from_args(a)
    res = ftri(m, read_prompts(a.behaviour, "--behaviour"), read_prompts(a.control, "--control"), a.score,
               a.positions)
    js = to_json(res, max(a.top, 10))
    for r in js["experts"][:max(a.top, 10)]:
        print(f"layer {r['layer']:>3} expert {r['expert']:>4}: behaviour {r['freq_behaviour']:.3f} control "
              f"{r['freq_control']:.3f} score {r['score']:+.3f}")
    if a.out:
        print(f"wrote {atomic_write_json(a.out, js)}")
    if a.prompt:
        chosen = res.ranked[:a.top]
        with m.intervene(switch(m, chosen, a.mode)):
            switched = m.generate(a.prompt, max_new_tokens=a.max_new_tokens, chat=a.chat)
        plain = m.generate(a.prompt, max_new_tokens=a.max_new_tokens, chat=a.chat)
        for p, x, y in zip(a.prompt, plain, switched):
            print(f"### {p}\n  plain: {x!r}\n  {a.mode} {chosen}: {y!r}")
        n = len(a.prompt)
        print(f"refusal rate (substring judge): plain {sum(map(is_refusal, plain)) / n:.2f}, experts {a.mode} "
              f"{sum(map(is_refusal, switched)) / n:.2f}")


def cmd_moefy(a: argparse.Namespace) -> None:
    from actlab.steer.moefy import demo_texts, moefy

    m = clikit.model_from_args(a)
    texts = clikit.texts_from_args(a) if (a.text or a.file) else demo_texts()
    rep = moefy(m, a.out, texts, n_experts=a.experts, top_k=a.top_k, n_tokens=a.tokens)
    r2 = sorted(rep.router_r2)
    print(f"wrote {a.out}: a Mixtral folder, {rep.n_experts} experts per block, top-{rep.top_k}; router R^2 median "
          f"{r2[len(r2) // 2]:.2f} (min {r2[0]:.2f})")


def _data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", help='JSONL, one {"positive": text, "negative": text} per line')
    p.add_argument("--positive", help="positive prompts (.txt one per line, .json list, .jsonl)")
    p.add_argument("--negative", help="negative prompts (.txt one per line, .json list, .jsonl)")
    p.add_argument("--site", action="append", help=f"{clikit.SITES_HELP} (default: --layers resid_post)")
    p.add_argument("--layers", default="all", help="'all' or comma-separated block indices (resid_post sites)")


def _how(p: argparse.ArgumentParser, scale: str = "raw") -> None:
    p.add_argument("--alpha", type=float, default=1.0, help="strength (in --scale units)")
    p.add_argument("--scale", default=scale, choices=["raw", "unit", "resid"],
                   help="raw vector, unit vector, or units of the median residual norm at the site")
    p.add_argument("--mode", default="add", choices=["add", "norm_add", "prompt_add", "ablate", "ablate_all"],
                   help="how to apply the direction")


def register(subparsers: argparse._SubParsersAction) -> None:
    from actlab.steer import ExtractConfig, SweepConfig
    from actlab.steer.directions import METHODS, POSITION_RULES

    sp = subparsers.add_parser("steer", help="steering directions: extract, apply, sweep, generate")
    sub = clikit.subcommands(sp, dest="steer_cmd", metavar="VERB")
    sp.set_defaults(func=lambda a: sp.print_help())

    p = sub.add_parser("extract", help="extract direction(s) from contrast data; saves safetensors + JSON")
    clikit.add_model_args(p)
    _data(p)
    clikit.add_config(p, ExtractConfig)
    p.add_argument("--out", required=True, help="output folder (one subfolder per site when several)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("apply", help="turn a direction into a replayable interventions file, or bake an ablation "
                                     "into the weights (--orthogonalize)")
    p.add_argument("direction", help="direction folder written by 'steer extract'")
    clikit.add_model_args(p, positional=False, required=False)
    _how(p)
    p.add_argument("--out", default="steer.json", help="interventions JSON to write")
    p.add_argument("--orthogonalize", metavar="OUT_DIR", help="write an edited model folder with the direction "
                                                              "removed from every residual write (needs --model)")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("sweep", help="sweep layers x strengths; score concept and fluency; plot and pick the best")
    clikit.add_model_args(p)
    _data(p)
    p.add_argument("--method", default="mean_diff", choices=METHODS, help="direction estimator")
    p.add_argument("--position", default="last", choices=POSITION_RULES, help="which tokens each example gives")
    clikit.add_config(p, SweepConfig)
    p.add_argument("--prompts", required=True, help="unrelated prompts to generate from (.txt/.json/.jsonl)")
    p.add_argument("--neutral", help="neutral prompts for the KL cost (default: --prompts)")
    p.add_argument("--keywords", help="concept keywords, comma separated (keyword scorer)")
    p.add_argument("--target", help="target description (MiniLM cosine scorer)")
    p.add_argument("--out", required=True, help="output folder: sweep.json, best.json, tradeoff.png, best_direction/")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("generate", help="generate with a saved direction (and optional self-logits augmentation)")
    clikit.add_model_args(p)
    p.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    p.add_argument("--direction", help="direction folder written by 'steer extract'")
    _how(p)
    p.add_argument("--sla-layers", help="layers for self-logits augmentation (VISTA), comma separated")
    p.add_argument("--sla-alpha", type=float, default=0.3, help="SLA mix weight")
    p.add_argument("--max-new-tokens", type=int, default=40, help="tokens to generate")
    p.add_argument("--chat", action="store_true", help="apply the chat template")
    p.set_defaults(func=cmd_generate)

    from actlab.steer import GrainsConfig

    p = sub.add_parser("grains", help="GrAInS: attribute preferred vs dispreferred completions to prompt tokens, "
                                      "ablate the top ones, build per-layer steering vectors")
    clikit.add_model_args(p)
    p.add_argument("--triples", help='JSONL, one {"prompt", "preferred", "dispreferred"} object per line')
    p.add_argument("--prompt", action="append", help="prompt (repeatable; with --preferred/--dispreferred)")
    p.add_argument("--preferred", action="append", help="preferred completion y+ (one per prompt, or one for all)")
    p.add_argument("--dispreferred", action="append", help="dispreferred completion y- (one per prompt, or one)")
    clikit.add_config(p, GrainsConfig)
    p.add_argument("--lam", help="strengths to report f = log p(y+) - log p(y-) at, comma separated (norm_add)")
    p.add_argument("--out", required=True, help="output folder: one direction folder per site, attributions.json")
    p.set_defaults(func=cmd_grains)

    p = sub.add_parser("refusal", help="harmfulness (t_inst) vs refusal (t_post) directions, their cosine, and "
                                       "each one's effect when added / ablated")
    clikit.add_model_args(p)
    p.add_argument("--harmful", help="harmful instructions (.txt/.json/.jsonl; default: the bundled 24)")
    p.add_argument("--harmless", help="harmless instructions (default: the bundled 24)")
    p.add_argument("--n", type=int, default=0, help="use only the first N of each set (0: all)")
    p.add_argument("--layers", required=True, help="blocks whose resid_pre gets the directions, comma separated")
    p.add_argument("--judge", default="generate", choices=["generate", "score"],
                   help="refusal labels from generated replies (substring judge) or from log p(I'm sorry) > "
                        "log p(Sure)")
    p.add_argument("--max-new-tokens", type=int, default=24, help="reply length for --judge generate")
    p.add_argument("--effects", action="store_true", help="also measure each direction added (harmless) and "
                                                          "ablated (harmful)")
    p.add_argument("--coeff", type=float, default=1.5, help="strength for --effects, x the raw mean difference")
    p.add_argument("--prompt-only", action="store_true", help="--effects adds the directions on the prompt tokens "
                                                              "only (the reference's prefill steering)")
    p.add_argument("--out", required=True, help="output folder: harm/<site>/ and refusal/<site>/ directions")
    p.set_defaults(func=cmd_refusal)

    p = sub.add_parser("vista", help="VISTA on a with/without-context pair: steering vector, KL / target rank per "
                                     "layer, steered generation, token ranking dynamics")
    clikit.add_model_args(p)
    p.add_argument("--context", required=True, help="the context (a supporting passage; the image in an LVLM)")
    p.add_argument("--question", required=True, help="the input without the context (generation starts here)")
    p.add_argument("--target", help="a token the context supports (its first token is tracked)")
    p.add_argument("--lam", type=float, default=0.05, help="VSV strength (0.01-0.17 in the paper)")
    p.add_argument("--sla-layers", help="self-logits augmentation layers, comma separated (default: none)")
    p.add_argument("--sla-alpha", type=float, default=0.3, help="SLA mix weight")
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens to generate")
    p.add_argument("--ranks-tokens", type=int, default=4, help="generated tokens whose per-layer rank to print")
    p.set_defaults(func=cmd_vista)

    p = sub.add_parser("mote", help="MoTE: rank MoE experts by fTRI (behaviour vs control routing) and generate with "
                                    "the top ones switched off or forced on")
    clikit.add_model_args(p)
    p.add_argument("--behaviour", required=True, help="behaviour prompts (.txt/.json/.jsonl)")
    p.add_argument("--control", required=True, help="matched control prompts")
    p.add_argument("--score", default="diff", choices=["diff", "ratio", "z"], help="fTRI score")
    p.add_argument("--positions", default="all", choices=["all", "last"], help="tokens whose routing counts")
    p.add_argument("--top", type=int, default=10, help="experts to switch (the N best by score)")
    p.add_argument("--mode", default="off", choices=["off", "on"], help="switch them off or force them on")
    p.add_argument("--prompt", action="append", help="prompts to generate from, plain and switched (repeatable)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--chat", action="store_true", help="apply the chat template")
    p.add_argument("--out", help="write the ranking as JSON here")
    p.set_defaults(func=cmd_mote)
    p = sub.add_parser("moefy", help="MoEfication: write a dense Llama-family model as a Mixtral folder (neurons split "
                                     "into experts, a fitted top-k router), e.g. to run 'steer mote' on it")
    clikit.add_model_args(p)
    clikit.add_text_args(p)
    p.add_argument("--experts", type=int, default=8, help="experts per block (must divide the MLP width)")
    p.add_argument("--top-k", type=int, default=6, help="experts per token")
    p.add_argument("--tokens", type=int, default=2048, help="tokens of text (default: the demo corpus) the routers "
                                                             "are fitted on")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_moefy)
