"""Attribution-graph runs as the CLI starts them: load per-layer transcoders from a folder, build, save and export a
graph, validate a saved graph by ablation; each writes its outputs into one folder."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actlab.circuits.config import GraphConfig, ValidateConfig

if TYPE_CHECKING:
    from actlab.dictionary import Dictionary
    from actlab.models import Model


def load_transcoders(folder: str | Path, device: Any = None) -> list[Dictionary]:
    """Every dictionary folder directly inside ``folder`` (as ``actlab sae train`` writes one per site), or
    ``folder`` itself when it is one; each must be a transcoder."""
    from actlab.artifact import ArtifactMissingError
    from actlab.dictionary import load

    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactMissingError(f"no transcoder folder at {folder}")
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "cfg.json").exists())
    paths = subs if subs else [folder] if (folder / "cfg.json").exists() else []
    if not paths:
        raise ArtifactMissingError(f"{folder} holds no dictionary folders (cfg.json + weights); train one transcoder "
                                   f"per layer with `actlab transcoder train` (blocks.i.mlp_in -> blocks.i.mlp_out)")
    return [load(p, device=device) for p in paths]


def graph_run(model: Model, transcoders: str | Path, text: str, out: str | Path, cfg: GraphConfig, *,
              target: str | None = None, slug: str = "graph", scan: str | None = None, k: int = 10
              ) -> dict[str, Any]:
    """Build the graph of ``text``; write ``{out}/graph`` (the artifact), ``{out}/{slug}.json`` (circuit-tracer
    JSON) with ``graph-metadata.json``, and ``{out}/summary.json``; returns the summary."""
    from actlab.artifact import atomic_write_json, folder_lock
    from actlab.circuits.export import write_graph_files
    from actlab.circuits.graph import attribute
    from actlab.circuits.prune import node_influence, prune_graph, top_paths

    tcs = load_transcoders(transcoders, device=model.device)
    out = Path(out)
    with folder_lock(out, what="attribution graph"):
        g = attribute(model, tcs, text, cfg, target=target)
        g.meta["transcoder_folder"] = str(transcoders)
        g.save(out / "graph")
        write_graph_files(g, slug, out, scan=scan, tokenizer=model.tokenizer, node_threshold=cfg.node_threshold,
                          edge_threshold=cfg.edge_threshold)
        pr = prune_graph(g, cfg.node_threshold, cfg.edge_threshold)
        infl = node_influence(g)
        nf = g.n_features
        top = infl[:nf].argsort(descending=True)[:k].tolist() if nf else []
        summary = {"prompt": g.prompt, "targets": g.logit_tokens.tolist(),
                   "target_probabilities": g.logit_probabilities.tolist(), "active_latents": int(g.meta["n_active"]),
                   "latent_nodes": nf, "identity_error": g.identity_error, "fit_error": g.meta["fit_error"],
                   "kept_nodes": int(pr.node_mask.sum()), "kept_edges": int(pr.edge_mask.sum()),
                   "top_nodes": [{"node": g.node_label(i), "influence": float(infl[i])} for i in top],
                   "top_path": [g.node_label(i) for i in top_paths(g, 1)[0][1]],
                   "config": dataclasses.asdict(cfg)}
        atomic_write_json(out / "summary.json", summary)
    return summary


def validate_run(model: Model, transcoders: str | Path, graph: str | Path, cfg: ValidateConfig,
                 out: str | Path | None = None) -> dict[str, Any]:
    """Validate a saved graph (``{graph}`` or ``{graph}/graph``) by ablation; write ``{out}/validation.json``."""
    from actlab.artifact import atomic_write_json
    from actlab.circuits.graph import AttributionGraph
    from actlab.circuits.validate import validate_by_ablation

    gpath = Path(graph)
    if (gpath / "graph").is_dir():
        gpath = gpath / "graph"
    g = AttributionGraph.load(gpath)
    r = validate_by_ablation(model, load_transcoders(transcoders, device=model.device), g, cfg.k, mode=cfg.mode,
                             scale=cfg.scale)
    res = r.to_dict()
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(out) / "validation.json", res)
    return res


__all__ = ["graph_run", "load_transcoders", "validate_run"]
