"""``actlab circuits graph|validate``: flags (config dataclasses via actlab.clikit) and calls into actlab.circuits; no
logic."""
from __future__ import annotations

import argparse

from actlab import clikit


def cmd_graph(a: argparse.Namespace) -> None:
    from actlab.circuits.run import graph_run

    s = graph_run(clikit.model_from_args(a), a.transcoders, a.text, a.out, clikit.config_from_args(a),
                  target=a.target, slug=a.slug, scan=a.scan)
    print(f"{s['latent_nodes']} latent nodes of {s['active_latents']} active; identity error "
          f"{s['identity_error']:.2e}; kept {s['kept_nodes']} nodes, {s['kept_edges']} edges")
    for n in s["top_nodes"]:
        print(f"{n['node']:>24} influence {n['influence']:.4f}")
    print("top path: " + " -> ".join(s["top_path"]))
    print(f"wrote {a.out}/graph, {a.out}/{a.slug}.json, graph-metadata.json, summary.json")


def cmd_validate(a: argparse.Namespace) -> None:
    from actlab.circuits.run import validate_run

    r = validate_run(clikit.model_from_args(a), a.transcoders, a.graph, clikit.config_from_args(a), a.out)
    for n in r["nodes"]:
        print(f"{n['node']:>24} predicted {n['predicted']:+.4f}  actual {n['actual']:+.4f}")
    print(f"correlation (graph total effect vs ablation, {r['mode']}): {r['correlation']:.3f}; direct edge only: "
          f"{r['direct_correlation']:.3f}")


def register(sub) -> None:
    from actlab.circuits.config import GraphConfig, ValidateConfig

    p = sub.add_parser("circuits", help="transcoder attribution graphs (circuit-tracer JSON) and their validation",
                       description="Attribution graphs over per-layer transcoders in a local replacement model.")
    s = clikit.subcommands(p, dest="circuits_command", metavar="VERB", required=True)

    q = s.add_parser("graph", help="attribution graph of one prompt: artifact, circuit-tracer JSON, summary",
                     description="Build, prune and export the attribution graph of a prompt.")
    clikit.add_model_args(q)
    q.add_argument("--transcoders", required=True, help="folder of per-layer transcoders (one sub-folder each)")
    q.add_argument("--text", required=True, help="the prompt")
    q.add_argument("--target", help="target token (one-token string or id; default: the most probable logits)")
    q.add_argument("--slug", default="graph", help="graph name in the JSON (default graph)")
    q.add_argument("--scan", help="transcoder set name written as metadata.scan (default actlab-<model>)")
    q.add_argument("--out", default="circuits_out", help="output folder (default circuits_out)")
    clikit.add_config(q, GraphConfig)
    q.set_defaults(func=cmd_graph)

    q = s.add_parser("validate", help="ablate the top graph latents; correlation of predicted vs actual change",
                     description="Validate a saved attribution graph by ablating its most influential latents.")
    clikit.add_model_args(q)
    q.add_argument("--transcoders", required=True, help="the transcoder folder the graph was built with")
    q.add_argument("--graph", required=True, help="graph folder (from `actlab circuits graph`)")
    q.add_argument("--out", help="write validation.json here")
    clikit.add_config(q, ValidateConfig)
    q.set_defaults(func=cmd_validate)
