"""``actlab sae train|eval|info|top|export`` and ``actlab transcoder train|eval``: flags only; the work is in
``actlab.dictionary`` (``train_sites``, ``eval_report``, ``load``, ``top_examples``, the exporters)."""
from __future__ import annotations

import argparse
import json
import sys

from actlab import clikit


def _train_args(p: argparse.ArgumentParser, transcoder: bool) -> None:
    src = p.add_argument_group("data (a store, or a model + text file on the fly)")
    src.add_argument("--store", help="activation store folder (actlab store harvest)")
    clikit.add_model_args(p, positional=False, required=False)      # on-the-fly training instead of --store
    src.add_argument("--data", help="text file / jsonl / parquet for on-the-fly training")
    src.add_argument("--context-length", type=int, default=128, help="tokens per context on the fly")
    if transcoder:
        p.add_argument("--site", required=True, help="input site, e.g. blocks.3.mlp_in")
        p.add_argument("--site-out", required=True, help="target site, e.g. blocks.3.mlp_out")
        p.add_argument("--skip", action="store_true", help="add a linear skip connection")
    else:
        p.add_argument("--site", required=True, action="append",
                       help="site(s) to train on (repeat or comma-separate: one SAE per site, spread over ranks)")
    p.add_argument("--arch", default="topk",
                   help="topk | batchtopk | jumprelu | relu | gated | gsae (gsae: on the fly only; default topk)")
    p.add_argument("--k", type=int, default=32, help="active latents per token (TopK family)")
    p.add_argument("--expansion", type=int, default=16, help="latents = expansion * d_in")
    p.add_argument("--latents", type=int, default=0, help="number of latents (overrides --expansion)")
    p.add_argument("--l1-coef", type=float, default=1.0, help="sparsity coefficient (relu/gated L1, jumprelu L0)")
    from actlab.dictionary import TrainConfig
    clikit.add_config(p, TrainConfig, dest="train", default=TrainConfig(total_tokens=2_000_000))
    p.add_argument("--eager", action="store_true", help="use the dense eager reference instead of fused kernels")
    p.add_argument("--gsae-beta", type=float, default=1.0,
                   help="g-SAE: weight of the downstream-gradient term in latent selection (0 = plain TopK)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")


def cmd_train(a, transcoder: bool = False) -> None:
    from actlab.dictionary import train_sites
    dict_kw = dict(arch=a.arch, d_sae=a.latents, expansion=a.expansion, k=a.k, l1_coef=a.l1_coef,
                   skip=getattr(a, "skip", False), fused=not a.eager, gsae_beta=a.gsae_beta)
    tc = clikit.config_from_args(a, "train")
    if a.device and tc.train_device == "cpu":   # --device names where the work runs: the SAE trains there too
        tc.train_device = a.device                # (an explicit --train-device other than cpu still wins)
    if not tc.out:
        raise ValueError("give --out: the folder the dictionary, its metrics and checkpoints go to")
    sites = [a.site] if transcoder else clikit.split_list(a.site)
    done = train_sites(sites, dict_kw, tc, site_out=a.site_out if transcoder else None, store=a.store,
                       model=_model(a), texts=a.data, context_length=a.context_length, threads=a.threads)
    for site, m in done:
        fin = m.cfg.train.get("final", {})
        out = f"{tc.out}/{site}" if len(sites) > 1 else tc.out
        print(f"{site}: trained {m.cfg.train['tokens']} tokens -> {out}  "
              f"(last batch: fvu {fin.get('fvu', float('nan')):.4f}, l0 {fin.get('l0', float('nan')):.1f}, "
              f"dead {fin.get('dead_frac', float('nan')):.3f})")


def _model(a):
    """The --model (with --dtype/--device) when given."""
    return clikit.model_from_args(a) if a.model else None


def _load(a):
    """The dictionary at ``a.path`` with the --site / --site-out / --hookpoint / --norm-scale options applied."""
    from actlab.dictionary import load
    return load(a.path, site=getattr(a, "site", None), site_out=getattr(a, "site_out", None),
                hookpoint=getattr(a, "hookpoint", None), norm_scaling_factor=getattr(a, "norm_scale", None))


def _load_args(p) -> None:
    p.add_argument("path", help="dictionary folder (actlab, SAELens or sparsify)")
    p.add_argument("--site", help="the site it reads, overriding the folder's (peer hook names are mapped)")
    p.add_argument("--site-out", help="transcoders: the site it predicts, overriding the folder's")
    p.add_argument("--hookpoint", help="sparsify folder with several hookpoints: the one to load")
    p.add_argument("--norm-scale", type=float, default=None,
                   help="SAELens normalize_activations=expected_average_only_in: the norm scaling factor to fold")


def cmd_eval(a) -> None:
    from actlab.dictionary import eval_report
    res = eval_report(_load(a), store=a.store, tokens=a.tokens, batch_size=a.batch_size, seed=a.seed, png=a.png,
                      model=_model(a), texts=a.texts, max_texts=a.max_texts, skip_first=a.splice_skip_first,
                      exclude_bos=not a.splice_bos)
    print(json.dumps(res, indent=2))


def cmd_info(a) -> None:
    from actlab.dictionary import describe
    print(json.dumps(describe(_load(a)), indent=2))


def cmd_top(a) -> None:
    from actlab.dictionary import render, store_tokenizer, top_examples
    from actlab.store import ActivationStore
    m = _load(a)
    s = ActivationStore(a.store)
    feats = [int(f) for f in clikit.split_list(a.features)] or None
    res = top_examples(m, s, features=feats, n_features=a.n_features, top=a.top, max_rows=a.tokens,
                       before=a.window)
    tok = store_tokenizer(s)
    color = sys.stdout.isatty() and not a.no_color
    for f, exs in res.items():
        print(f"feature {f}:")
        for ex in exs:
            print(f"  {ex.value:8.3f}  {render(ex, tok, color)}")


def cmd_export(a) -> None:
    from actlab.dictionary import export_saelens, export_sparsify
    out = (export_saelens if a.to == "saelens" else export_sparsify)(_load(a), a.out)
    print(f"wrote {a.to} folder {out}")
def _eval_args(p) -> None:
    _load_args(p)
    p.add_argument("--store", help="store with the site(s), for FVU / L0 / dead / dense")
    p.add_argument("--tokens", type=int, default=200_000, help="rows to evaluate")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--png", help="write the feature-density histogram here")
    clikit.add_model_args(p, positional=False, required=False)      # for spliced cross-entropy
    p.add_argument("--texts", help="text file for spliced cross-entropy")
    p.add_argument("--max-texts", type=int, default=64)
    p.add_argument("--splice-skip-first", type=int, default=1,
                   help="spliced CE: leave the first N real tokens of each text clean and unscored (default 1)")
    p.add_argument("--splice-bos", action="store_true", help="spliced CE: splice and score BOS tokens too")
    p.add_argument("--seed", type=int, default=0)


def cmd_snmf_fit(a) -> None:
    from actlab.dictionary.snmf_model import fit
    texts = clikit.texts_from_args(a, "nothing to factorise")
    f = fit(clikit.model_from_args(a), texts, cfg=clikit.config_from_args(a))
    print(f"blocks.{f.layer}.mlp_act: {f.K} features from {f.G.shape[0]} tokens, loss {f.loss:.4g} -> {f.save(a.out)}")


def cmd_snmf_describe(a) -> None:
    from actlab.dictionary.snmf_model import SNMFFeatures
    f, m = SNMFFeatures.load(a.path), clikit.model_from_args(a)
    for k in [int(x) for x in clikit.split_list(a.feature)] or range(f.K):
        print(f"feature {k}:")
        print("  promotes: " + " ".join(repr(t) for t, _ in f.top_tokens(m, k, a.n)))
        for g, c in f.top_contexts(k, a.n):
            print(f"  {g:8.4f}  {c!r}")


def cmd_snmf_steer(a) -> None:
    from actlab.dictionary.snmf_model import SNMFFeatures
    f, m = SNMFFeatures.load(a.path), clikit.model_from_args(a)
    with m.intervene(f.steer(a.feature, a.alpha, a.where, m)):
        outs = m.generate(a.prompt, max_new_tokens=a.max_new_tokens, chat=a.chat)
    for p, o in zip(a.prompt, outs):
        print(f"### {p}\n{o}\n")


def _register_snmf(sub) -> None:
    from actlab.dictionary.snmf_model import SNMFConfig
    p = sub.add_parser("snmf", help="semi-NMF features of an MLP: fit, describe (inputs and outputs), steer")
    s = clikit.subcommands(p, dest="snmf_cmd", metavar="VERB")
    p.set_defaults(func=lambda a: p.print_help())
    f = s.add_parser("fit", help="factorise blocks.{layer}.mlp_act over texts (neurons x tokens)")
    clikit.add_model_args(f)
    clikit.add_text_args(f)
    clikit.add_config(f, SNMFConfig)
    f.add_argument("--out", required=True, help="output folder (actlab artifact dictionary.snmf)")
    f.set_defaults(func=cmd_snmf_fit)
    d = s.add_parser("describe", help="per feature: promoted tokens (W_U^T W_out F_k) and top contexts (G)")
    d.add_argument("path", help="folder written by 'snmf fit'")
    clikit.add_model_args(d, positional=False)
    d.add_argument("--feature", help="features, comma separated (default: all)")
    d.add_argument("--n", type=int, default=8, help="tokens and contexts per feature")
    d.set_defaults(func=cmd_snmf_describe)
    g = s.add_parser("steer", help="generate with alpha F_k / ||F_k|| added to the MLP activation")
    g.add_argument("path", help="folder written by 'snmf fit'")
    clikit.add_model_args(g, positional=False)
    g.add_argument("--feature", type=int, required=True, help="feature index")
    g.add_argument("--alpha", type=float, default=4.0, help="strength (norm of the added vector)")
    g.add_argument("--where", default="mlp_act", choices=["mlp_act", "mlp_out"],
                   help="add at the MLP activation, or its W_out image at the MLP output")
    g.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--chat", action="store_true", help="apply the chat template")
    g.set_defaults(func=cmd_snmf_steer)


def cmd_codebook_train(a) -> None:
    import os

    from actlab.artifact import atomic_folder
    from actlab.dictionary.codebook_model import fine_tune, save_codebook
    m, cfg = clikit.model_from_args(a), clikit.config_from_args(a)
    res, rep = fine_tune(m, clikit.texts_from_args(a, "nothing to train on"), cfg)
    extra = {"report": rep}
    if cfg.train_model:  # the weights changed: the codebook applies to this copy only
        with atomic_folder(f"{a.out}/model") as tmp:
            m.module.save_pretrained(tmp)
            m.tokenizer.save_pretrained(tmp)
    else:  # frozen model: record where it came from instead of copying it
        extra["base_model"] = os.path.abspath(a.model) if os.path.exists(a.model) else a.model
    save_codebook(res.layer, f"{a.out}/codebook", cfg.site, extra)
    what = "codebook and model jointly fine-tuned" if cfg.train_model else "codebook trained (model frozen)"
    print(f"held-out loss: original {rep['loss_original']:.4f}, random codes {rep['loss_codebook_random']:.4f}, "
          f"initialised codebook {rep['loss_codebook_untrained']:.4f}, {what} {rep['loss_codebook_trained']:.4f} "
          f"({rep['train_contexts']} training contexts); within {rep['tolerance']:.0%} of the original: "
          f"{'yes' if rep['within_tolerance'] else 'no'}")
    if cfg.train_model:
        print(f"wrote {a.out}/model (HF folder the codebook applies to) and {a.out}/codebook")
    else:
        print(f"wrote {a.out}/codebook (applies to the unchanged base model {extra['base_model']})")


def codebook_model_source(path: str, cfg: dict, override: str | None = None) -> str:
    """The model a codebook folder applies to: ``--model`` if given, the jointly trained copy in ``path/model``, or
    the frozen base model the codebook recorded."""
    import os

    if override:
        return override
    if os.path.isdir(f"{path}/model"):
        return f"{path}/model"
    if cfg.get("base_model"):
        return cfg["base_model"]
    raise ValueError(f"{path} has neither a model/ folder nor a recorded base model; give --model")


def cmd_codebook_generate(a) -> None:
    from actlab import load_model
    from actlab.dictionary.codebook_model import forcing, load_codebook, splice
    layer, site, cfg = load_codebook(f"{a.path}/codebook")
    m = load_model(codebook_model_source(a.path, cfg, a.model), dtype=a.dtype, device=a.device)
    with m.intervene({site: splice(layer)}):
        plain = m.generate(a.prompt, max_new_tokens=a.max_new_tokens)
    with forcing(m, site, layer, a.code, a.where):
        forced = m.generate(a.prompt, max_new_tokens=a.max_new_tokens)
    for p, x, y in zip(a.prompt, plain, forced):
        print(f"### {p}\n  codebook: {x!r}\n  code {a.code} forced ({a.where}): {y!r}")


def _register_codebook(sub) -> None:
    from actlab.dictionary.codebook_model import CodebookTrainConfig
    p = sub.add_parser("codebook", help="codebook features: trained inside a model (alone or jointly), code forcing")
    s = clikit.subcommands(p, dest="codebook_cmd", metavar="VERB")
    p.set_defaults(func=lambda a: p.print_help())
    t = s.add_parser("train", help="insert a codebook at a site and train it on texts (the model too with --train-model true)")
    clikit.add_model_args(t)
    clikit.add_text_args(t)
    clikit.add_config(t, CodebookTrainConfig)
    t.add_argument("--out", required=True,
                   help="output folder: codebook/ (and model/, the fine-tuned HF folder, with --train-model true)")
    t.set_defaults(func=cmd_codebook_train)
    g = s.add_parser("generate", help="generate through the codebook, plain and with a code forced")
    g.add_argument("path", help="folder written by 'codebook train'")
    g.add_argument("--code", type=int, required=True, help="code to force")
    g.add_argument("--where", default="last", choices=["last", "all"],
                   help="force at each forward call's last position (each new token) or everywhere")
    g.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    g.add_argument("--max-new-tokens", type=int, default=16)
    g.add_argument("--model", default=None,
                   help="model to apply the codebook to (default: PATH/model, else the base model it was trained on)")
    g.add_argument("--dtype", default="fp32", choices=clikit.MODEL_DTYPES, help="model dtype")
    g.add_argument("--device", default=None, help="torch device (default cpu)")
    g.set_defaults(func=cmd_codebook_generate)


def register(sub) -> None:
    _register_snmf(sub)
    _register_codebook(sub)
    p = sub.add_parser("sae", help="train / evaluate / inspect sparse autoencoders")
    s = p.add_subparsers(dest="verb", metavar="VERB")
    t = s.add_parser("train", help="train an SAE from a store (or a model on the fly)")
    _train_args(t, transcoder=False)
    t.set_defaults(func=lambda a: cmd_train(a, False))
    e = s.add_parser("eval", help="FVU, L0, dead/dense fractions, density PNG, spliced CE")
    _eval_args(e)
    e.set_defaults(func=cmd_eval)
    i = s.add_parser("info", help="print a dictionary's config and training metrics")
    _load_args(i)
    i.set_defaults(func=cmd_info)
    tp = s.add_parser("top", help="top-activating contexts per feature from a store")
    _load_args(tp)
    tp.add_argument("--store", required=True)
    tp.add_argument("--features", default="", help="comma-separated feature ids (default: most frequent)")
    tp.add_argument("--n-features", type=int, default=10)
    tp.add_argument("--top", type=int, default=5, help="examples per feature")
    tp.add_argument("--window", type=int, default=12, help="tokens of context before the highlighted one")
    tp.add_argument("--tokens", type=int, default=100_000, help="store rows to scan")
    tp.add_argument("--no-color", action="store_true", help="mark the token with [[ ]] instead of colour")
    tp.set_defaults(func=cmd_top)
    x = s.add_parser("export", help="write a dictionary in SAELens or sparsify format")
    _load_args(x)
    x.add_argument("--to", choices=["saelens", "sparsify"], required=True)
    x.add_argument("--out", required=True, help="folder (sparsify: the parent; the SAE goes in <out>/<hookpoint>)")
    x.set_defaults(func=cmd_export)
    p.set_defaults(func=lambda a: p.print_help())

    q = sub.add_parser("transcoder", help="train / evaluate transcoders (sparse MLP replacements)")
    s2 = q.add_subparsers(dest="verb", metavar="VERB")
    t2 = s2.add_parser("train", help="train a transcoder mlp_in -> mlp_out")
    _train_args(t2, transcoder=True)
    t2.set_defaults(func=lambda a: cmd_train(a, True))
    e2 = s2.add_parser("eval", help="FVU / L0 on a store; CE with the MLP replaced")
    _eval_args(e2)
    e2.set_defaults(func=cmd_eval)
    q.set_defaults(func=lambda a: q.print_help())
