"""``actlab security unlearn|scan|invert|reroute|attack``: flags from the run configs (actlab.clikit) and calls into actlab.security;
no logic here."""
from __future__ import annotations

import argparse

from actlab import clikit


def cmd_unlearn(a: argparse.Namespace) -> None:
    from actlab.security.run import unlearn

    res = unlearn(clikit.config_from_args(a), a.out)
    for name, r in res["results"].items():
        print(f"{name:<40} CA {r['ca']['value']:.3f} ASR {r['asr']['value']:.3f}")
    print(f"wrote {a.out}/report.md")


def cmd_scan(a: argparse.Namespace) -> None:
    from actlab.security.run import run_scan

    res = run_scan(clikit.config_from_args(a), a.out)
    s = res["scan"]
    print(f"flagged {s['flagged']} class {s['target']} anomaly index {s['anomaly_index']:.2f}; wrote {a.out}/report.md")


def cmd_attack(a: argparse.Namespace) -> None:
    from actlab.security.run import run_attack

    model = clikit.model_from_args(a) if a.model else None
    res = run_attack(clikit.config_from_args(a), a.out, model=model)
    print(f"a={res['a']} t_max={res['t_max']} fit={res['fit']}; wrote {a.out}/report.md")


def cmd_invert(a: argparse.Namespace) -> None:
    from actlab.security.run_invert import run_invert

    res = run_invert(clikit.config_from_args(a), a.out)
    if "tijo" in res:
        r = res["tijo"]
        print(f"tijo: flagged {r['flagged']} target {r['target']} word {r['token']} anomaly index "
              f"{r['anomaly_index']:.2f}; wrote {a.out}/report.md")
    else:
        e, after = res["invertune"]["estimate"], res["results"]["after activation tuning"]
        print(f"invertune: target {e['target']} flagged {e['flagged']}; after tuning CA {after['ca']['value']:.3f} "
              f"ASR {after['asr_planted']['value']:.3f}; wrote {a.out}/report.md")


def cmd_reroute(a: argparse.Namespace) -> None:
    from actlab.security.rerouting import run_rerouting

    model = clikit.model_from_args(a) if a.model else None
    res = run_rerouting(clikit.config_from_args(a), a.out, model=model)
    r = res["result"]
    print(f"reroute: crossed {r['crossed']} after {r['iterations']} iterations, suffix {r['suffix']!r}; "
          f"wrote {a.out}/report.md")


def register(subparsers: argparse._SubParsersAction) -> None:
    from actlab.security.rerouting import ReroutingConfig
    from actlab.security.run import AttackRunConfig, ScanRunConfig, UnlearnConfig
    from actlab.security.run_invert import InvertRunConfig

    sp = subparsers.add_parser("security", help="backdoor fixtures: SSD unlearning, trigger scan, TIJO/InverTune "
                                                "inversion, subspace rerouting, activation attacks (reports with CIs)")
    sub = clikit.subcommands(sp, dest="security_cmd", metavar="VERB")
    sp.set_defaults(func=lambda a: sp.print_help())

    p = sub.add_parser("unlearn", help="SSD corrective unlearning on the BadNets digits fixture")
    clikit.add_config(p, UnlearnConfig)
    p.add_argument("--out", required=True, help="report folder: report.md, report.json, ca_asr.png")
    p.set_defaults(func=cmd_unlearn)

    p = sub.add_parser("scan", help="trigger scan (which class, which patch) of the BadNets digits fixture")
    clikit.add_config(p, ScanRunConfig)
    p.add_argument("--out", required=True, help="report folder: report.md, report.json, mask_l1.png, mask.png")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("invert", help="backdoor inversion: TIJO (dual-key VQA toy) or InverTune (CLIP-like toy: "
                                      "target, trigger, activation tuning) via --method")
    clikit.add_config(p, InvertRunConfig)
    p.add_argument("--out", required=True, help="report folder: report.md, report.json, losses.png or "
                                                "landing.png + trigger.png")
    p.set_defaults(func=cmd_invert)

    p = sub.add_parser("reroute", help="subspace rerouting: suffix search moving a prompt's hidden state across the "
                                       "refusal direction (toy tiny-gpt2 unless --model)")
    clikit.add_model_args(p, positional=False, required=False)
    clikit.add_config(p, ReroutingConfig)
    p.add_argument("--out", required=True, help="report folder: report.md, report.json, loss.png")
    p.set_defaults(func=cmd_reroute)

    p = sub.add_parser("attack", help="activation-attack scaling law: t_max per attacked positions, fit, chi")
    clikit.add_model_args(p, positional=False, required=False)
    clikit.add_config(p, AttackRunConfig)
    p.add_argument("--out", required=True, help="report folder: report.md, report.json, t_max.png")
    p.set_defaults(func=cmd_attack)
