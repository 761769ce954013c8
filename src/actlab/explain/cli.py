"""``actlab explain cache|examples|show``: flags (config dataclasses via actlab.clikit) and calls into
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


def cmd_show(a: argparse.Namespace) -> None:
    from actlab.explain.run import feature_card

    cache, tok, model, dec = _open(a)
    if model is None and not a.no_effects and dec is not None:
        from actlab.explain.run import cache_model
        model = cache_model(cache)
    for j in clikit.split_list(a.latent):
        print(feature_card(cache, int(j), tok, model=model, decoder=dec, n_examples=a.examples,
                           color=not a.no_color))
        print()


def register(sub) -> None:
    from actlab.explain.cache import CacheConfig
    from actlab.explain.examples import ExampleConfig

    p = sub.add_parser("explain", help="explain features: latent cache, examples, feature cards",
                       description="Cache latents (SAE/transcoder, MLP neurons, directions) over a store or texts, "
                                   "sample examples, and show feature cards.")
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
