"""``actlab lens logit|tuned|dla``: flags (config dataclasses via actlab.clikit) and calls into actlab.lens; no logic."""
from __future__ import annotations

import argparse

from actlab import clikit


def cmd_logit(a: argparse.Namespace) -> None:
    from actlab.lens.report import lens_report

    texts = clikit.texts_from_args(a, "no texts for the lens")
    s = lens_report(clikit.model_from_args(a), texts, a.out, clikit.config_from_args(a), tuned=a.tuned)
    for lens, sites in s["lenses"].items():
        for site, v in sites.items():
            print(f"{lens:>5} {site:>24} KL {v['mean_kl']:8.3f}  top-1 agreement {v['top1_agreement']:.2f}")
    print(f"wrote {a.out}/lens.png, tokens.md, summary.json")


def cmd_tuned(a: argparse.Namespace) -> None:
    from actlab.lens.report import tuned_lens_run

    lens = tuned_lens_run(clikit.model_from_args(a), clikit.config_from_args(a), a.out, data=a.data, store=a.store)
    before, after = lens.metrics.get("eval_kl_logit_lens", {}), lens.metrics.get("eval_kl_tuned_lens", {})
    for s in lens.sites:
        if s in before:
            print(f"{s:>24} held-out KL: logit lens {before[s]:.3f} -> tuned lens {after[s]:.3f}")
    print(f"wrote tuned lens {a.out} (use: actlab lens logit MODEL --tuned {a.out} --text ...)")


def cmd_dla(a: argparse.Namespace) -> None:
    from actlab.lens.report import dla_report

    top = dla_report(clikit.model_from_args(a), a.text, a.target, a.contrast, a.out, a.position, a.k)
    for label, v in top:
        print(f"{label:>28} {v:+.4f}")
    print(f"wrote {a.out}/dla.png, dla.json")


def register(sub) -> None:
    from actlab.lens.report import LensReportConfig
    from actlab.lens.tuned import TunedLensConfig

    p = sub.add_parser("lens", help="logit lens, tuned lens, direct logit attribution",
                       description="Read residual sites out through the final norm and unembedding.")
    s = clikit.subcommands(p, dest="lens_command", metavar="VERB", required=True)

    q = s.add_parser("logit", help="logit lens (optionally beside a tuned lens): PNG, token table, JSON",
                     description="Logit lens per site on texts: KL to the final distribution, top-token rank, "
                                 "top tokens.")
    clikit.add_model_args(q)
    clikit.add_text_args(q)
    q.add_argument("--tuned", help="a tuned lens folder (from `actlab lens tuned`) to compare")
    q.add_argument("--out", default="lens_out", help="output folder (default lens_out)")
    clikit.add_config(q, LensReportConfig)
    q.set_defaults(func=cmd_logit)

    q = s.add_parser("tuned", help="train a tuned lens (per-layer affine translators, KL to the final layer)",
                     description="Train a tuned lens on texts or an activation store and save it as an artifact "
                                 "folder.")
    clikit.add_model_args(q)
    q.add_argument("--data", help="texts: .txt/.jsonl/.parquet file, dataset folder, or 'demo'")
    q.add_argument("--store", help="an activation store folder holding the lens sites and the last resid_post")
    q.add_argument("--out", required=True, help="output folder for the tuned lens (locked while training)")
    clikit.add_config(q, TunedLensConfig)
    q.set_defaults(func=cmd_tuned)

    q = s.add_parser("dla", help="direct logit attribution of one text (heads, MLPs, embeddings, biases)",
                     description="Split a logit (difference) into direct contributions, final norm scale frozen.")
    clikit.add_model_args(q)
    q.add_argument("--text", required=True, help="the text")
    q.add_argument("--target", required=True, help="target token (one-token string or id)")
    q.add_argument("--contrast", help="contrast token (logit difference target - contrast)")
    q.add_argument("--position", type=int, default=-1, help="token position (default -1, the last)")
    q.add_argument("-k", type=int, default=20, help="components shown (default 20)")
    q.add_argument("--out", default="dla_out", help="output folder (default dla_out)")
    q.set_defaults(func=cmd_dla)
