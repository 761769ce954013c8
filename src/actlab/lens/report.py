"""What the ``actlab lens`` commands do, as library functions: run a lens or DLA on texts and write its figures,
tables and numbers into an output folder (PNG + markdown + JSON, atomically); train a tuned lens from a data spec."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actlab.lens.dla import direct_logit_attribution
from actlab.lens.logit_lens import logit_lens
from actlab.lens.plots import plot_lens
from actlab.lens.tuned import TunedLens, TunedLensConfig, train_tuned_lens

if TYPE_CHECKING:
    from actlab.models import Model


@dataclass
class LensReportConfig:
    """What `actlab lens logit` reads out and shows."""

    sites: str = "blocks.*.resid_post"
    """Residual sites to read out (comma list, * = every layer)."""
    k: int = 5
    """Top tokens per site in the token table."""
    row: int = 0
    """Which text the token table shows."""
    position: int = -1
    """Padded column the token table shows (-1: each row's last token)."""

    def __post_init__(self) -> None:
        if self.k < 1 or self.row < 0:
            raise ValueError(f"k >= 1 and row >= 0 are needed; got k={self.k}, row={self.row}")


def _expand(model: Model, sites: str) -> list[str]:
    out: list[str] = []
    for s in (p.strip() for p in sites.split(",") if p.strip()):
        out += [s.replace("*", str(i)) for i in range(model.adapter.n_layers)] if "*" in s else [s]
    return model.check_sites(out)


def lens_report(model: Model, texts: Sequence[str], out: str | Path, cfg: LensReportConfig | None = None,
                tuned: str | Path | None = None) -> dict[str, Any]:
    """Logit lens (and the tuned lens in folder ``tuned``, compared on the same sites) on ``texts``; writes
    ``lens.png``, ``tokens.md`` (token table per lens) and ``summary.json`` (mean KL / top-1 agreement per site)."""
    from actlab.artifact import atomic_write_json, atomic_write_text

    cfg = cfg or LensReportConfig()
    if not texts:
        raise ValueError("no texts to read out: give --text or --file")
    if cfg.row >= len(texts):
        raise ValueError(f"row {cfg.row} out of range for {len(texts)} texts")
    sites = _expand(model, cfg.sites)
    results = [logit_lens(model, list(texts), sites, k=cfg.k, keep_logits=False)]
    if tuned is not None:
        lens = TunedLens.load(tuned)
        results.append(logit_lens(model, list(texts), [s for s in sites if lens.has(s)], lens=lens, k=cfg.k,
                                  keep_logits=False))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_lens(results, out / "lens.png")
    tables = [f"## {r.lens} lens, text {cfg.row}, column {cfg.position}\n\n"
              f"{r.token_table(model.tokenizer, cfg.row, cfg.position, cfg.k)}\n" for r in results]
    atomic_write_text(out / "tokens.md", "\n".join(tables))
    summary = {"model": model.name, "texts": len(texts),
               "lenses": {r.lens: {s: {"mean_kl": float(kl), "top1_agreement": float(a)}
                                   for s, kl, a in zip(r.sites, r.mean_kl(), r.top1_agreement())} for r in results}}
    atomic_write_json(out / "summary.json", summary)
    return summary


def tuned_lens_run(model: Model, cfg: TunedLensConfig, out: str | Path, data: str | None = None,
                   store: str | None = None, progress: bool = True) -> TunedLens:
    """Train a tuned lens on texts (``data``: a path or 'demo') or an activation store folder, saved into ``out``."""
    if (data is None) == (store is None):
        raise ValueError("give exactly one of --data (texts: a file, a folder or 'demo') and --store (an activation "
                         "store folder)")
    if store is not None:
        from actlab.store import ActivationStore

        src: Any = ActivationStore(store)
    else:
        from actlab.data import load_texts

        src = load_texts(data)
    return train_tuned_lens(model, src, cfg, out=out, progress=progress)


def dla_report(model: Model, text: str, target: str | int, contrast: str | int | None, out: str | Path,
               position: int = -1, k: int = 20) -> list[tuple[str, float]]:
    """Direct logit attribution of one text; writes ``dla.png`` and ``dla.json`` (every component); returns the
    top ``k`` components."""
    from actlab.artifact import atomic_write_json

    def tok(t: Any) -> Any:
        return int(t) if isinstance(t, str) and t.lstrip("-").isdigit() else t

    r = direct_logit_attribution(model, text, tok(target), None if contrast is None else tok(contrast),
                                 position=position)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    r.plot(str(out / "dla.png"), k=k)
    atomic_write_json(out / "dla.json", {"model": model.name, "text": text, "target": int(r.target[0]),
                                         "contrast": None if r.contrast is None else int(r.contrast[0]),
                                         "position": position, "logit": float(r.logit[0]),
                                         "total": float(r.total[0]), "components": dict(zip(r.labels,
                                                                                         r.values[0].tolist()))})
    return r.top(k)
