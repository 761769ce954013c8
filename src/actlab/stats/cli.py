"""``actlab stats ...``: the report (``actlab stats MODEL --data PATH --tokens N --out DIR``) and the verbs
``emergence`` (fit curves over a checkpoint series), ``train-checkpoints`` (make one), ``infoplane``
(information plane of the 12-bit task)."""
from __future__ import annotations

import argparse
import dataclasses

from actlab import clikit

VERBS = ("emergence", "train-checkpoints", "infoplane")
EPILOG = """usage forms:
  actlab stats MODEL [--data PATH] [--tokens N] [--out DIR] ...   the report (run `actlab stats MODEL --help`)
  actlab stats emergence CKPT_DIR... --out DIR                       massive activations over training + curve fits
  actlab stats train-checkpoints --out DIR                          train a tiny model, save a checkpoint series
  actlab stats infoplane --out DIR                                  12-bit information-plane experiment"""


def register(sub) -> None:
    p = sub.add_parser("stats", help="activation statistics report (massive activations, sparsity, outliers, "
                                     "calibration) and related verbs",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="MODEL|VERB", help=f"a model (bundled name, HF folder, .gguf) or one of {VERBS}")
    p.add_argument("args", nargs=argparse.REMAINDER, help="options of the report or of the verb")
    p.set_defaults(func=main)


def main(a: argparse.Namespace) -> None:
    if a.target in VERBS:
        return {"emergence": _emergence, "train-checkpoints": _train, "infoplane": _infoplane}[a.target](a.args)
    from actlab.stats.report import StatsConfig, run_stats

    ap = clikit.ArgumentParser(prog="actlab stats", description="The activation statistics report of MODEL.")
    clikit.add_model_args(ap)
    clikit.add_config(ap, StatsConfig)
    ns = ap.parse_args([a.target, *a.args])
    cfg = dataclasses.replace(clikit.config_from_args(ns), model=ns.model, dtype=ns.dtype, device=ns.device)
    rep = run_stats(cfg)
    print(rep.summary())
    print(f"wrote {cfg.out}/report.md, stats.json and plots")


def _emergence(argv: list[str]) -> None:
    ap = clikit.ArgumentParser(prog="actlab stats emergence",
                               description="Per-layer massive-activation magnitudes over a checkpoint series "
                                           "(folders named step-<N>), fitted with A exp(-lam t') log(1+t'/tau) + K.")
    ap.add_argument("checkpoints", nargs="+", help="checkpoint folders (HF format), or one folder holding step-* folders")
    ap.add_argument("--data", default=None, help="probe text source, or 'demo' (default: the demo corpus)")
    ap.add_argument("--probe-contexts", type=int, default=8, help="probe contexts (default 8)")
    ap.add_argument("--context-length", type=int, default=128, help="tokens per probe context (default 128)")
    ap.add_argument("--metric", choices=("top1", "ratio"), default="top1", help="fit top |h| or top/median")
    ap.add_argument("--out", default="emergence_out", help="output folder")
    a = ap.parse_args(argv)
    from actlab.stats.emergence import run_emergence

    em = run_emergence(a.checkpoints, a.out, a.data, a.probe_contexts, a.context_length, a.metric)
    for layer, fit in em.fits.items():
        print(f"layer {layer}: {fit}")
    print(f"wrote {a.out}/emergence.json and emergence.png")


def _train(argv: list[str]) -> None:
    from actlab.stats.train_checkpoints import CheckpointSeriesConfig, train_checkpoints

    ap = clikit.ArgumentParser(prog="actlab stats train-checkpoints",
                               description="Train a tiny Llama and save a checkpoint series step-<N>/.")
    clikit.add_config(ap, CheckpointSeriesConfig)
    cfg = clikit.config_from_args(ap.parse_args(argv))
    paths = train_checkpoints(cfg)
    print(f"wrote {len(paths)} checkpoints under {cfg.out}")


def _infoplane(argv: list[str]) -> None:
    ap = clikit.ArgumentParser(prog="actlab stats infoplane",
                               description="Train 12-10-7-5-4-3-2 on the 12-bit task; I(X;T), I(T;Y) per layer "
                                           "over training with the adaptive estimators (EBAB, aKDE).")
    ap.add_argument("--activation", default="tanh", help="tanh, relu, elu, softplus, swish (default tanh)")
    ap.add_argument("--epochs", type=int, default=400, help="full-batch epochs (default 400)")
    ap.add_argument("--weight-decay", type=float, default=0.0, help="L2 regularisation (default 0)")
    ap.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    ap.add_argument("--out", default="infoplane_out", help="output folder")
    a = ap.parse_args(argv)
    from actlab.stats.info import run_info_plane

    run_info_plane(a.out, a.activation, epochs=a.epochs, weight_decay=a.weight_decay, seed=a.seed)
    print(f"wrote {a.out}/infoplane.json and infoplane_*.png")
