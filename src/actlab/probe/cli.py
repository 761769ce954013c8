"""``actlab probe train|eval|monitor|latent-guard|neurofeedback``: flags (ProbeConfig via actlab.clikit) and calls into actlab.probe; no logic."""
from __future__ import annotations

import argparse

from actlab import clikit


def _texts(path: str, flag: str) -> list[str]:
    from actlab.record_io import read_text_lines

    if not path:
        raise ValueError(f"{flag} is required: a text file, one example per line (or .jsonl with a text field)")
    return read_text_lines(path)


def cmd_train(a: argparse.Namespace) -> None:
    from actlab.probe import train

    m = clikit.model_from_args(a)
    site = clikit.parse_sites(m, a.site)
    if len(site) != 1:
        raise ValueError(f"--site takes one site for a probe; got {site}")
    _, res = train(m, _texts(a.positive, "--positive"), _texts(a.negative, "--negative"), site[0], a.out,
                       clikit.config_from_args(a))
    cv = res["cv"]["auroc"]
    print(f"{site[0]}: CV AUROC {cv['value']:.3f} [{cv['lo']:.3f}, {cv['hi']:.3f}] -> {a.out}/report.md")


def cmd_eval(a: argparse.Namespace) -> None:
    from actlab.probe import LinearProbe, eval_probe

    res = eval_probe(clikit.model_from_args(a), LinearProbe.load(a.probe), _texts(a.positive, "--positive"),
                     _texts(a.negative, "--negative"), a.out, n_boot=a.n_boot)
    r = res["eval"]["auroc"]
    print(f"AUROC {r['value']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] -> {a.out}/report.md")


def cmd_monitor(a: argparse.Namespace) -> None:
    from actlab.probe import load_monitor, monitor

    res = monitor(clikit.model_from_args(a), load_monitor(a.probe), clikit.texts_from_args(a, "no prompts"),
                  a.out, max_new_tokens=a.max_new_tokens, stop_above=a.stop_above, chat=a.chat)
    for i, (t, s) in enumerate(zip(res.texts, res.scores.tolist())):
        print(f"[{i}] max score {max(s):.3f} stopped at {res.stopped_at[i]}: {t!r}")


def cmd_latent_guard(a: argparse.Namespace) -> None:
    from actlab.probe import default_guard_site, run_latent_guard

    m = clikit.model_from_args(a)
    sites = clikit.parse_sites(m, a.sites or default_guard_site(m))
    harmful = _texts(a.harmful, "--harmful") if a.harmful else None
    harmless = _texts(a.harmless, "--harmless") if a.harmless else None
    res = run_latent_guard(m, sites, a.out, clikit.config_from_args(a), harmful=harmful, harmless=harmless)
    ev = res["eval"]
    for k in ("auroc_plain", "auroc_rewrites"):
        print(f"{k}: {ev[k]['value']:.3f} [{ev[k]['lo']:.3f}, {ev[k]['hi']:.3f}]")
    print(f"guard -> {res['guard']}; report -> {a.out}/report.md")


def cmd_neurofeedback(a: argparse.Namespace) -> None:
    from actlab.probe import run_neurofeedback

    res = run_neurofeedback(clikit.model_from_args(a), a.out, clikit.config_from_args(a))
    for name, r in res["axes"].items():
        au = "  ".join(f"N={n} {e['mean']:.2f}" for n, e in r["reporting"]["auroc"].items())
        print(f"{name}: reporting AUROC {au}")
    print(f"report -> {a.out}/report.md")


def register(subparsers: argparse._SubParsersAction) -> None:
    from actlab.probe import GuardConfig, NFConfig, ProbeConfig

    sp = subparsers.add_parser("probe", help="linear probes: train (CV AUROC), eval, monitor generation, "
                                                "latent-guard, neurofeedback")
    sub = clikit.subcommands(sp, dest="probe_cmd", metavar="VERB")
    sp.set_defaults(func=lambda a: sp.print_help())

    p = sub.add_parser("train", help="train a probe on positive vs negative texts at a site; report + artifact")
    clikit.add_model_args(p)
    p.add_argument("--site", required=True, help=clikit.SITES_HELP)
    p.add_argument("--positive", required=True, help="class-1 texts (.txt one per line or .jsonl)")
    p.add_argument("--negative", required=True, help="class-0 texts (.txt one per line or .jsonl)")
    clikit.add_config(p, ProbeConfig)
    p.add_argument("--out", required=True, help="output folder: probe/, report.md, report.json, roc.png")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="AUROC with a bootstrap interval of a saved probe on held-out texts")
    p.add_argument("probe", help="probe folder written by 'probe train' (its probe/ subfolder)")
    clikit.add_model_args(p, positional=False)
    p.add_argument("--positive", required=True, help="class-1 texts")
    p.add_argument("--negative", required=True, help="class-0 texts")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--out", required=True, help="report folder")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("monitor", help="generate with the probe scoring every step (optional stop)")
    p.add_argument("probe", help="probe folder (probe train's probe/) or Latent Guard folder (latent-guard's guard/)")
    clikit.add_model_args(p, positional=False)
    clikit.add_text_args(p)
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate")
    p.add_argument("--stop-above", type=float, default=None, help="stop a row once its score reaches this")
    p.add_argument("--chat", action="store_true", help="apply the chat template")
    p.add_argument("--out", default=None, help="report folder (scores.json/png)")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("latent-guard", help="Latent Guard: harmful/harmless centroids at t_inst, AUROC on held-out "
                                            "jailbreak-style rewrites; report + guard artifact")
    clikit.add_model_args(p)
    p.add_argument("--sites", default="", help=f"{clikit.SITES_HELP} (default: the middle block's resid_post)")
    p.add_argument("--harmful", default="", help="harmful instructions (.txt one per line or .jsonl; default: bundled)")
    p.add_argument("--harmless", default="", help="harmless instructions (default: the bundled set)")
    clikit.add_config(p, GuardConfig)
    p.add_argument("--out", required=True, help="output folder: guard/, report.md, report.json, roc.png")
    p.set_defaults(func=cmd_latent_guard)

    p = sub.add_parser("neurofeedback", help="neurofeedback paradigm: can the model report / control the projection of "
                                             "its own states on an axis after N in-context examples; report")
    clikit.add_model_args(p)
    clikit.add_config(p, NFConfig)
    p.add_argument("--out", required=True, help="output folder: report.md, report.json, reporting.png, control.png")
    p.set_defaults(func=cmd_neurofeedback)
