"""Dictionary runs as the CLI starts them, for Python users too: the batch source of a site (an activation store,
or a model on the fly), training one dictionary per site (several sites spread over torchrun ranks, one site
data-parallel), and the evaluation report of a saved dictionary."""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actlab.dictionary.base import DictConfig, Dictionary
from actlab.dictionary.data import Source, model_source, site_width, store_source
from actlab.dictionary.trainer import TrainConfig, Trainer

if TYPE_CHECKING:
    from actlab.models import Model


def site_source(site: str, batch_size: int, *, site_out: str | None = None, store: str | None = None,
                model: Model | str | None = None, texts: Sequence[str] | str | None = None,
                context_length: int = 128, seed: int = 0, rank: int = 0, world: int = 1,
                with_grad: bool = False) -> tuple[Source, int, int | None, str]:
    """(source, d_in, d_out, model name) for ``site`` (-> ``site_out``): rows of a store, or recorded on the fly
    from ``model`` over ``texts`` (a list, or a text/jsonl/parquet file). ``with_grad`` (g-SAE) needs the model."""
    if store is not None:
        if with_grad:
            raise ValueError("g-SAE training needs the downstream-loss gradient at the site, which a store does not "
                             "hold: train on the fly with a model and texts (--model/--data), or use beta 0 "
                             "(--gsae-beta 0) for plain TopK")
        from actlab.store import ActivationStore
        s = ActivationStore(store)
        src = store_source(s, site, batch_size, site_out=site_out, seed=seed, rank=rank, world=world)
        return src, s.dims[site], (s.dims[site_out] if site_out else None), \
            (s.manifest.get("model") or {}).get("name", "")
    if model is None or texts is None:
        raise ValueError("give a store (--store), or a model and texts (--model and --data) for on-the-fly training")
    if isinstance(model, str):
        from actlab import load_model
        model = load_model(model)
    if isinstance(texts, (str, Path)):
        from actlab.data.sources import load_texts
        texts = load_texts(texts)
    src = model_source(model, site, texts, batch_size, site_out=site_out, context_length=context_length, seed=seed,
                       with_grad=with_grad)
    return src, site_width(model, site), (site_width(model, site_out) if site_out else None), model.name


def train_sites(sites: Sequence[str], dict_kw: dict[str, Any], train_cfg: TrainConfig, *,
                site_out: str | None = None, store: str | None = None, model: Model | str | None = None,
                texts: Sequence[str] | str | None = None, context_length: int = 128,
                threads: int = 0) -> list[tuple[str, Dictionary]]:
    """Train one dictionary per site; returns [(site, dictionary)] for the sites this rank trained.

    ``dict_kw``: DictConfig fields other than the widths, sites and model (filled from the data). Several sites:
    one dictionary each in ``<out>/<site>``, spread over torchrun ranks; one site: data-parallel over ranks, in
    ``out``. ``threads`` sets torch's CPU threads (0: by the encoder GEMM's size and the machine's load)."""
    import torch

    from actlab import distributed as D
    if threads:
        torch.set_num_threads(threads)
    if D.env_world_size() > 1 and not D.is_initialized():
        D.init_from_env()
    rank, world = D.rank(), D.world_size()
    sites = list(sites)
    if not sites:
        raise ValueError("no site to train on")
    if site_out and len(sites) != 1:
        raise ValueError(f"a transcoder reads one site; got {sites}")
    many = len(sites) > 1
    with_grad = dict_kw.get("arch") == "gsae" and dict_kw.get("gsae_beta", 1.0) != 0
    done = []
    for site in (sites[rank::world] if many else sites):
        r, w = (0, 1) if many else (rank, world)
        src, d_in, d_out, model_name = site_source(site, train_cfg.batch_size, site_out=site_out, store=store,
                                                   model=model, texts=texts, context_length=context_length,
                                                   seed=train_cfg.seed, rank=r, world=w, with_grad=with_grad)
        dc = DictConfig(**{**dict_kw, "d_in": d_in, "d_out": d_out, "site": site, "site_out": site_out or "",
                           "model": model_name})
        if not threads:
            from actlab.core import set_threads
            set_threads(0, 2.0 * train_cfg.batch_size * dc.d_in * dc.d_sae)
        out = str(Path(train_cfg.out) / site) if many and train_cfg.out else train_cfg.out
        tc = dataclasses.replace(train_cfg, out=out)
        if tc.dry_run or tc.estimate:
            from actlab.dictionary.estimate import check_disk, estimate
            est = estimate(dc, tc, src)
            if rank == 0 or many:
                print(f"{site}: {est}", file=sys.stderr, flush=True)
            if tc.out:
                check_disk(est, tc.out)
            if tc.dry_run:
                continue
        done.append((site, Trainer(dc, tc, src, data_parallel=not many).fit()))
    if world > 1:
        D.barrier()
    return done


def eval_report(dictionary: Dictionary, *, store: str | None = None, tokens: int = 200_000, batch_size: int = 4096,
                seed: int = 0, png: str | None = None, model: Model | str | None = None,
                texts: Sequence[str] | str | None = None, max_texts: int = 64, skip_first: int = 1,
                exclude_bos: bool = True) -> dict[str, Any]:
    """Reconstruction metrics on store rows (+ density PNG) and/or spliced cross-entropy on texts, as one dict."""
    from actlab.dictionary.evaluate import density_histogram, evaluate, splice_ce
    c = dictionary.cfg
    res: dict[str, Any] = {}
    if store is not None:
        from actlab.store import ActivationStore
        s = ActivationStore(store)
        src = store_source(s, c.site, batch_size, site_out=(c.site_out or None) if c.is_transcoder else None,
                           seed=seed + 12345)
        ev = evaluate(dictionary, src(0), max_tokens=tokens)
        res.update(ev.to_dict())
        if png:
            density_histogram(ev.density, png, title=f"{c.arch} {c.site}: feature density")
    if model is not None and texts is not None:
        if isinstance(model, str):
            from actlab import load_model
            model = load_model(model)
        if isinstance(texts, (str, Path)):
            from actlab.data.sources import load_texts
            texts = load_texts(texts)
        sp = splice_ce(model, dictionary, list(texts)[:max_texts], skip_first=skip_first, exclude_bos=exclude_bos)
        res.update({f"splice_{k}": v for k, v in dataclasses.asdict(sp).items()})
    if not res:
        raise ValueError("nothing to evaluate: give a store (--store) for reconstruction metrics and/or a model and "
                         "texts (--model, --texts) for spliced cross-entropy")
    return res
