"""``actlab explain cache|examples|show|run|score|export-neuronpedia|export-html|serve``: flags (config dataclasses via actlab.clikit) and calls into
actlab.explain.run; no logic."""
from __future__ import annotations

import argparse
import json

from actlab import clikit


def cmd_cache(a: argparse.Namespace) -> None:
    from actlab.explain.run import cache_from_paths

    model = clikit.model_from_args(a) if a.model else None
    c = cache_from_paths(a.out, clikit.config_from_args(a), store=a.store, model=model, data=a.data,
                         dictionary=a.dictionary, neurons=a.neurons, directions=a.directions, site=a.site,
                         max_rows=a.max_rows, batch_rows=a.batch_rows, max_texts=a.max_texts)
    if c is None:   # a torchrun rank other than 0: rank 0 reports
        return
    alive = int((c.count > 0).sum())
    print(f"cached {c.n_latents} latents over {c.n_rows} tokens ({alive} fire at least once; "
          f"{int(c.count.sum())} entries in {len(c.config['shards'])} shard(s)); wrote {a.out}")


def _open(a: argparse.Namespace):
    from actlab.explain import LatentCache
    from actlab.explain.run import cache_tokenizer, reopen_latents

    cache = LatentCache(a.cache)
    model = clikit.model_from_args(a) if a.model else None
    lat = reopen_latents(cache)
    return cache, cache_tokenizer(cache, model), model, (lat.decoder() if lat is not None else None)


def cmd_examples(a: argparse.Namespace) -> None:
    from actlab.artifact import atomic_write_json
    from actlab.explain.run import examples_report

    cache, tok, _, dec = _open(a)
    latents = [int(x) for x in clikit.split_list(a.latent)]
    rep = examples_report(cache, latents, clikit.config_from_args(a), tok, dec)
    if a.out:
        atomic_write_json(a.out, rep)
        print(f"wrote {a.out}")
    else:
        print(json.dumps(rep, indent=1))


def _dictionary(cache):
    from actlab.explain.run import reopen_latents

    return getattr(reopen_latents(cache), "dictionary", None)


def cmd_show(a: argparse.Namespace) -> None:
    from actlab.explain.run import feature_card

    cache, tok, model, dec = _open(a)
    if model is None and not a.no_effects and dec is not None:
        from actlab.explain.run import cache_model
        model = cache_model(cache)
    for j in clikit.split_list(a.latent):
        print(feature_card(cache, int(j), tok, model=model, decoder=dec, n_examples=a.examples,
                           color=not a.no_color, dictionary=_dictionary(cache)))
        print()


def _latents(a: argparse.Namespace) -> list[int] | None:
    return [int(x) for x in clikit.split_list(a.latent)] if a.latent else None


def cmd_run(a: argparse.Namespace) -> None:
    from actlab.explain.jobs import make_explainer, run_explain

    _, tok, _, dec = _open(a)
    explainer = make_explainer(a.explainer_cfg, a.endpoint)
    exps = run_explain(a.cache, a.out, a.select, a.cfg, a.prompt, explainer, tok, dec, _latents(a))
    for e in exps:
        print(f"latent {e.latent}: {e.text}")
    print(f"explained {len(exps)} latent(s) with {explainer.name}; wrote {a.out}")


def cmd_score(a: argparse.Namespace) -> None:
    from actlab.explain.jobs import make_explainer, run_score
    from actlab.explain.pipeline import load_explanations, summary

    conf, _ = load_explanations(a.explanations)
    a.cache = conf["cache"]
    cache, tok, model, dec = _open(a)
    names = a.score.names()
    judge = make_explainer(a.explainer_cfg, a.endpoint) if {"detection", "fuzzing"} & set(names) else None
    base = None
    if {"surprisal", "intervention"} & set(names):
        from actlab import load_model
        from actlab.explain.run import cache_model
        base = load_model(a.score.surprisal_model) if a.score.surprisal_model else (model or cache_model(cache))
    from actlab.explain.run import reopen_latents
    lat = reopen_latents(cache)
    results = run_score(a.explanations, a.out, a.score, judge, tok, base, getattr(lat, "dictionary", None), dec)
    for k, v in summary(results).items():
        print(f"{k}: mean {v['mean']:.3f} over {v['n']} latent(s)")
    print(f"wrote {a.out}")


def cmd_export_neuronpedia(a: argparse.Namespace) -> None:
    from actlab.explain.neuronpedia import export_neuronpedia
    from actlab.explain.pipeline import load_explanations, load_scores

    cache, tok, model, dec = _open(a)
    if model is None and not a.no_effects and dec is not None:
        from actlab.explain.run import cache_model
        model = cache_model(cache)
    exps, scores, judge = [], [], ""
    if a.explanations:
        _, exps = load_explanations(a.explanations)
    if a.scores:
        conf, scores = load_scores(a.scores)
        judge = conf.get("judge") or ""
    folder = export_neuronpedia(cache, a.out, model_id=a.model_id, source=a.source, tokenizer=tok,
                                latents=_latents(a), explanations=exps, scores=scores, judge=judge, model=model,
                                decoder=dec, n_activations=a.activations)
    print(f"wrote {folder}")


def cmd_export_html(a: argparse.Namespace) -> None:
    try:
        from actlab.web.export import export_html
    except ImportError as e:
        raise ImportError(f"actlab explain export-html needs actlab.web ({e})") from None
    model = clikit.model_from_args(a) if a.model else None
    out = export_html(a.dirs, a.out, model=model, features=_latents(a), progress=True)
    print(f"wrote {out}/index.html")


def cmd_serve(a: argparse.Namespace) -> None:
    from actlab.explain.explainers import ModelExplainer
    from actlab.explain.serve import ChatServer

    srv = ChatServer(ModelExplainer(clikit.model_from_args(a)), a.host, a.port, a.model)
    print(f"serving {a.model} at {srv.base_url} (POST /chat/completions); Ctrl-C stops", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.httpd.server_close()


def _explainer_flags(q) -> None:
    from actlab.explain.endpoint import EndpointConfig
    from actlab.explain.jobs import ExplainerConfig

    clikit.add_config(q, ExplainerConfig, dest="explainer_cfg")
    clikit.add_config(q, EndpointConfig, dest="endpoint")


def register(sub) -> None:
    from actlab.explain.cache import CacheConfig
    from actlab.explain.examples import ExampleConfig

    p = sub.add_parser("explain", help="explain features: latent cache, examples, cards, LLM explanations, scores",
                       description="Cache latents (SAE/transcoder, MLP neurons, directions) over a store or texts, "
                                   "sample examples, show feature cards, explain latents with an LLM, score the "
                                   "explanations, export them (Neuronpedia, HTML), serve a chat model.")
    s = clikit.subcommands(p, dest="explain_command", metavar="VERB", required=True)

    q = s.add_parser("cache", help="cache a latent source over a store (or a model on --data), sparse and resumable",
                     description="Stream rows through a latent source into a sharded sparse cache (rerun the same "
                                 "command to resume after a crash).")
    clikit.add_model_args(q, positional=False, required=False)
    q.add_argument("--store", help="activation store folder (from actlab harvest)")
    q.add_argument("--data", default=None, help="texts for --model: a .txt/.jsonl/.parquet file or 'demo'")
    q.add_argument("--max-texts", type=int, default=None, help="use the first N texts of --data")
    q.add_argument("--dictionary", help="SAE / transcoder folder (its encode gives the latents)")
    q.add_argument("--neurons", action="store_true", help="MLP neurons of an mlp_act --site as latents")
    q.add_argument("--directions", help="safetensors FILE or FILE:NAME holding [k, d] directions (projections)")
    q.add_argument("--site", help="site to read (default: the dictionary's)")
    q.add_argument("--max-rows", type=int, default=None, help="cache only the first N store rows")
    q.add_argument("--batch-rows", type=int, default=4096, help="store rows per encode batch (default 4096)")
    q.add_argument("--out", required=True, help="output folder (locked while caching)")
    clikit.add_config(q, CacheConfig)
    q.set_defaults(func=cmd_cache)

    q = s.add_parser("examples", help="train/test/non-activating examples of latents as JSON",
                     description="Sample examples of latents from a cache (windows with << >> highlights).")
    clikit.add_model_args(q, positional=False, required=False)
    q.add_argument("--cache", required=True, help="latent cache folder (from actlab explain cache)")
    q.add_argument("--latent", action="append", required=True, help="latent index (comma list or repeated)")
    q.add_argument("--out", help="write the JSON here (default: print it)")
    clikit.add_config(q, ExampleConfig)
    q.set_defaults(func=cmd_examples)

    q = s.add_parser("show", help="print a feature card: density, histogram, promoted tokens, top examples",
                     description="Print feature cards of latents from a cache.")
    clikit.add_model_args(q, positional=False, required=False)
    q.add_argument("--cache", required=True, help="latent cache folder")
    q.add_argument("--latent", action="append", required=True, help="latent index (comma list or repeated)")
    q.add_argument("--examples", type=int, default=5, help="examples shown (default 5)")
    q.add_argument("--no-effects", action="store_true", help="skip the promoted tokens (no model is loaded)")
    q.add_argument("--no-color", action="store_true", help="mark activating tokens with << >> instead of colour")
    q.set_defaults(func=cmd_show)

    from actlab.explain.jobs import ScoreConfig
    from actlab.explain.pipeline import SelectConfig
    from actlab.explain.prompts import PromptConfig

    q = s.add_parser("run", help="explain latents with an LLM (bundled SmolLM2 or an OpenAI-compatible endpoint)",
                     description="Explain the latents of a cache from their training examples; writes an "
                                 "explain.explanations folder. Endpoint URL/model/key also from OPENAI_BASE_URL, "
                                 "OPENAI_MODEL, OPENAI_API_KEY.")
    clikit.add_model_args(q, positional=False, required=False)
    q.add_argument("--cache", required=True, help="latent cache folder")
    q.add_argument("--latent", action="append", help="latents to explain (default: by --min-examples)")
    q.add_argument("--out", required=True, help="output folder")
    clikit.add_config(q, SelectConfig, dest="select")
    clikit.add_config(q, ExampleConfig)
    clikit.add_config(q, PromptConfig, dest="prompt")
    _explainer_flags(q)
    q.set_defaults(func=cmd_run)

    q = s.add_parser("score", help="score explanations (detection, fuzzing, embedding, surprisal, intervention)",
                     description="Score an explain.explanations folder on each latent's held-out examples; writes "
                                 "an explain.scores folder.")
    clikit.add_model_args(q, positional=False, required=False)
    q.add_argument("--explanations", required=True, help="folder from actlab explain run")
    q.add_argument("--out", required=True, help="output folder")
    clikit.add_config(q, ScoreConfig, dest="score")
    _explainer_flags(q)
    q.set_defaults(func=cmd_score)

    q = s.add_parser("export-neuronpedia", help="features, activations, explanations, scores as Neuronpedia JSONL",
                     description="Write Neuronpedia's export layout (features/activations/explanations/"
                                 "explanation_scores batch-0.jsonl.gz under OUT/MODEL_ID/SOURCE).")
    clikit.add_model_args(q, positional=False, required=False)
    q.add_argument("--cache", required=True, help="latent cache folder")
    q.add_argument("--explanations", help="explain.explanations folder")
    q.add_argument("--scores", help="explain.scores folder")
    q.add_argument("--latent", action="append", help="latents (default: those explained, else all that fire)")
    q.add_argument("--model-id", required=True, help="Neuronpedia model id (e.g. smollm2-135m)")
    q.add_argument("--source", required=True, help="Neuronpedia source id LAYER-SET (e.g. 3-res-actlab)")
    q.add_argument("--activations", type=int, default=20, help="top activation windows per feature (default 20)")
    q.add_argument("--no-effects", action="store_true", help="no promoted tokens (no model is loaded)")
    q.add_argument("--out", required=True, help="output folder")
    q.set_defaults(func=cmd_export_neuronpedia)

    q = s.add_parser("export-html", help="static HTML feature pages (actlab.web's exporter)",
                     description="Write a static site for caches / explanations (calls actlab.web.export).")
    clikit.add_model_args(q, positional=False, required=False)
    q.add_argument("dirs", nargs="+", help="artifact folders (caches, explanations, scores)")
    q.add_argument("--latent", action="append", help="export only these features")
    q.add_argument("--out", required=True, help="output folder (index.html inside)")
    q.set_defaults(func=cmd_export_html)

    q = s.add_parser("serve", help="serve a chat model as an OpenAI-compatible endpoint (stdlib HTTP)",
                     description="POST /v1/chat/completions over an in-process model (default the bundled "
                                 "SmolLM2); one generation at a time, for local use and tests.")
    clikit.add_model_args(q, positional=False, required=False)
    q.set_defaults(model="smollm2-135m-instruct")
    q.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    q.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    q.set_defaults(func=cmd_serve)
