"""The ``actlab viz`` runs: each writes a folder with PNG grids, ``index.html`` and a ``viz.<verb>`` artifact
(``cfg.json`` + ``result.safetensors``), and returns a one-screen summary."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from actlab.artifact import folder_lock, save_artifact
from actlab.viz.configs import FacetsRun, MaximizeRun, MdsRun, ModelChoice, RoarRun, TraverseRun, UnitChoice
from actlab.viz.gallery import save_grid, write_gallery
from actlab.viz.vision import digits_model

FORMAT_VERSION = 1
TENSORS = "result.safetensors"


def _model(c: ModelChoice):
    return digits_model(c.model.removeprefix("digits-"), cache=c.cache)


def _unit(c: UnitChoice):
    from actlab.viz.objectives import Unit

    return Unit(c.site, channel=c.channel, neuron=c.neuron)


def _save(out: Path, verb: str, cfg, extra: dict, tensors: dict) -> None:
    save_artifact(out, f"viz.{verb}", {"run": asdict(cfg), **extra},
                  {k: v.detach().float().contiguous() for k, v in tensors.items()}, version=FORMAT_VERSION,
                  tensors_file=TENSORS)


def run_maximize(cfg: MaximizeRun) -> str:
    """Maximise the unit from ``cfg.n`` random starts; grid + gallery + artifact in ``cfg.out``."""
    from actlab.viz.maximize import MaximizeConfig, maximize
    from actlab.viz.objectives import objective

    m, unit, out = _model(cfg), _unit(cfg), Path(cfg.out)
    size = m.meta["config"]["size"]
    res = [maximize(objective(m, unit), (1, 1, size, size),
                    MaximizeConfig(steps=cfg.steps, lr=cfg.lr, param=cfg.param, jitter=cfg.jitter, scale=cfg.scale,
                                   tv=cfg.tv, seed=s)) for s in range(cfg.n)]
    images, values = torch.cat([r.images for r in res]), torch.cat([r.values for r in res])
    with torch.no_grad():
        probs = torch.softmax(m.module(images), -1)
    with folder_lock(out, what="viz maximize"):
        save_grid(out / "maximize.png", images)
        cap = ", ".join(f"{v:.3g} (pred {int(p.argmax())}, p={float(p.max()):.2f})" for v, p in zip(values, probs))
        write_gallery(out, f"maximize {m.name} {unit.describe()}", [("images", "maximize.png", cap)])
        _save(out, "maximize", cfg, {"values": values.tolist()}, {"images": images, "values": values})
    return f"{unit.describe()}: values {[round(float(v), 3) for v in values]}; wrote {out}/index.html"


def run_facets(cfg: FacetsRun) -> str:
    """Multifaceted visualization of the unit over the training digits."""
    from actlab.data import load_digits
    from actlab.viz.facets import FacetsConfig, multifaceted
    from actlab.viz.maximize import MaximizeConfig
    from actlab.viz.objectives import objective

    m, unit, out = _model(cfg), _unit(cfg), Path(cfg.out)
    x = load_digits("train", size=m.meta["config"]["size"]).x
    fac = multifaceted(m, objective(m, unit), x, FacetsConfig(n_facets=cfg.n_facets, top=cfg.top),
                       code_site=cfg.code_site, max_cfg=MaximizeConfig(steps=cfg.steps, lr=0.05))
    with folder_lock(out, what="viz facets"):
        save_grid(out / "facets.png", fac.result.images)
        save_grid(out / "means.png", fac.means)
        secs = [("facet visualizations", "facets.png", f"values {[round(float(v), 3) for v in fac.result.values]}"),
                ("facet mean images (the starts)", "means.png",
                 f"members {[int((fac.labels == j).sum()) for j in range(cfg.n_facets)]}")]
        for j in range(cfg.n_facets):
            save_grid(out / f"facet{j}_members.png", x[fac.top[fac.labels == j][:16]])
            secs.append((f"facet {j}: top members", f"facet{j}_members.png", ""))
        write_gallery(out, f"facets {m.name} {unit.describe()}", secs)
        _save(out, "facets", cfg, {"diversity": fac.diversity()},
              {"images": fac.result.images, "means": fac.means, "top": fac.top.float(), "labels": fac.labels.float()})
    return f"{cfg.n_facets} facets, diversity {fac.diversity():.3f}; wrote {out}/index.html"


def run_mds(cfg: MdsRun) -> str:
    """MDS clustering of a site's channels; stimuli grid + gallery + labels."""
    from actlab.viz.mds import MDSConfig, channel_responses, mds_cluster

    m, out = _model(cfg), Path(cfg.out)
    size = m.meta["config"]["size"]
    r = mds_cluster(channel_responses(m, cfg.site), (1, size, size),
                    MDSConfig(n_clusters=cfg.n_clusters, rounds=cfg.rounds, steps=cfg.steps, radius=float(size)))
    sizes = [int((r.labels == k).sum()) for k in range(len(r.stimuli))]
    with folder_lock(out, what="viz mds"):
        save_grid(out / "stimuli.png", r.stimuli, normalize=True)
        write_gallery(out, f"MDS clusters of {m.name} {cfg.site}", [("cluster stimuli", "stimuli.png",
                                                                     f"cluster sizes {sizes}")])
        _save(out, "mds", cfg, {"sizes": sizes, "converged": r.converged, "rounds": len(r.history)},
              {"stimuli": r.stimuli, "labels": r.labels.float()})
    return f"{len(sizes)} clusters of {cfg.site}, sizes {sizes}, converged {r.converged}; wrote {out}/index.html"


def run_roar(cfg: RoarRun) -> str:
    """DiffROAR and signal mass of each method on BlockMNIST; a table in the gallery and results.json."""
    import actlab
    from actlab.viz.roar import attribution_scores, block_digits, diffroar, signal_mass
    from actlab.viz.vision import accuracy, digits_cnn, fit_classifier

    out = Path(cfg.out)
    tr, te = block_digits("train"), block_digits("test", seed=1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = fit_classifier(digits_cnn(8), tr.x, tr.y, epochs=cfg.epochs, lr=5e-3, batch_size=32)
    m = actlab.wrap(net)
    a, b = tr.subset(torch.arange(min(cfg.n_train, len(tr)))), te.subset(torch.arange(min(cfg.n_test, len(te))))
    rows, grids = [["method", "signal mass", f"acc top-{cfg.k:g}", f"acc bottom-{cfg.k:g}", "DiffROAR"]], []
    for meth in [s.strip() for s in cfg.methods.split(",") if s.strip()]:
        sa = attribution_scores(m, a, meth)
        sb = attribution_scores(m, b, meth, seed=1)
        r = diffroar(lambda: digits_cnn(8), a, b, sa, sb, cfg.k, epochs=cfg.epochs, lr=5e-3, batch_size=32)
        rows.append([meth, f"{float(signal_mass(sb, b.signal).mean()):.3f}", f"{r.top:.3f}", f"{r.bottom:.3f}",
                     f"{r.diff:+.3f}"])
        grids.append((meth, sb[:16]))
    with folder_lock(out, what="viz roar"):
        save_grid(out / "inputs.png", b.x[:16])
        secs = [("inputs", "inputs.png", "BlockMNIST test images")]
        for meth, s in grids:
            save_grid(out / f"attr_{meth}.png", s.abs()[:, None], normalize=True)
            secs.append((meth, f"attr_{meth}.png", "|attribution| per pixel"))
        write_gallery(out, f"DiffROAR on BlockMNIST (model acc {accuracy(net, te.x, te.y):.3f})", secs, rows)
        _save(out, "roar", cfg, {"table": rows}, {"inputs": b.x[:16]})
    return "\n".join(" | ".join(str(v) for v in r) for r in rows) + f"\nwrote {out}/index.html"


def run_traverse(cfg: TraverseRun) -> str:
    """Level set traversal between two test digits; the path as a grid with confidences."""
    from actlab.data import load_digits
    from actlab.viz.traverse import TraverseConfig, class_confidence, level_set_traverse

    m, out = _model(cfg), Path(cfg.out)
    te = load_digits("test", size=m.meta["config"]["size"])
    for i in (cfg.source, cfg.target):
        if not 0 <= i < len(te):
            raise ValueError(f"image index {i} out of range: the test split has {len(te)} images")
    src, tgt = te.x[cfg.source], te.x[cfg.target]
    with torch.no_grad():
        cls = int(m.module(src[None]).argmax())
    r = level_set_traverse(class_confidence(m, cls), src, tgt, TraverseConfig(steps=cfg.steps, eta=cfg.eta))
    keep = torch.linspace(0, len(r.path) - 1, min(10, len(r.path))).round().long()
    with folder_lock(out, what="viz traverse"):
        save_grid(out / "path.png", torch.cat([r.path[keep], tgt[None]]), nrow=11)
        cap = (f"class {cls}: confidence {[round(float(r.values[i]), 4) for i in keep]} (level {r.level:.4f}); "
               f"last image = the target; L-inf distance {r.distances[0]:.3f} -> {r.distances[-1]:.3f}")
        write_gallery(out, f"level set traversal {m.name}", [("path", "path.png", cap)])
        _save(out, "traverse", cfg, {"level": r.level, "distances": r.distances, "class": cls},
              {"path": r.path, "values": r.values})
    return (f"class {cls} level {r.level:.4f}; min confidence {float(r.values.min()):.4f}; distance "
            f"{r.distances[0]:.3f} -> {r.distances[-1]:.3f}; wrote {out}/index.html")
