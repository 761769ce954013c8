"""``actlab stats MODEL --data PATH --tokens N --out DIR``: one streaming pass (massive activations, sparsity,
linear-input ranges/outliers), then the ablation test, the attention-sink check and the calibration-set study
(a progress bar names each); writes ``stats.json``, ``report.md``, PNG plots and ``inputs.safetensors`` (the token
ids measured), all or nothing, into a locked output folder."""
from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STATS_JSON, REPORT_MD, INPUTS = "stats.json", "report.md", "inputs.safetensors"
PLOTS = {"massive": "massive_per_layer.png", "sparsity": "sparsity_per_layer.png",
         "ranges": "channel_ranges.png", "calibration": "calibration_ppl.png"}


@dataclass
class StatsConfig:
    """What ``actlab stats`` measures and on how much text."""

    model: str = field(default="", metadata={"cmd": False})
    """bundled model name, HF folder or .gguf (the CLI's positional MODEL)"""
    out: str = "stats_out"
    """output folder (report.md, stats.json, PNGs)"""
    data: str | None = None
    """text source (.txt/.jsonl/.parquet/folder, see actlab.data) or 'demo'; default: the bundled demo corpus"""
    tokens: int = 8192
    """tokens for the streaming statistics pass"""
    context_length: int = 256
    """tokens per packed context"""
    batch_size: int = 4
    """contexts per forward pass"""
    top_k: int = 10
    """largest activations kept per layer"""
    sparsity_eps: float | None = -1.0
    """active-unit threshold |a| > eps; -1 = auto (0 for ReLU MLPs, 1e-2 otherwise)"""
    ablation_tokens: int = 1024
    """held-out tokens for the zero/mean ablation of massive activations (0 = skip)"""
    sink_contexts: int = 2
    """contexts for the attention-sink check (0 = skip)"""
    eval_tokens: int = 1024
    """held-out tokens for calibration-set perplexities (0 = skip the calibration study)"""
    calib_contexts: int = 8
    """contexts per calibration set"""
    calib_length: int = 128
    """tokens per calibration context"""
    dtype: str = field(default="fp32", metadata={"cmd": False})
    """model dtype (the CLI's --dtype)"""
    device: str | None = field(default=None, metadata={"cmd": False})
    """torch device (the CLI's --device)"""
    seed: int = 0
    """document order seed"""

    def __post_init__(self):
        if self.tokens < self.context_length:
            raise ValueError(f"--tokens ({self.tokens}) must be at least one context ({self.context_length})")
        if self.batch_size < 1 or self.context_length < 2:
            raise ValueError("batch_size must be >= 1 and context_length >= 2")


def _docs(path: str | None) -> tuple[list[str], str]:
    """Documents of a data argument (None / 'demo': the bundled demo corpus; see actlab.data.resolve_data)."""
    from actlab.data import load_texts, resolve_data

    p = resolve_data(path)
    return load_texts(p), str(p)


def _contexts(model: Model, docs: list[str], n_tokens: int, L: int, seed: int) -> torch.Tensor:
    from actlab.data import pack_contexts

    return pack_contexts(model.tokenizer, docs, L, seed=seed, max_contexts=max(1, math.ceil(n_tokens / L))).input_ids


def probe_contexts(model: Model, docs: list[str], n_tokens: int, L: int, seed: int = 0,
                   src: str = "the data") -> tuple[torch.Tensor, list[str]]:
    """``(ids [n, L'], notes)``: up to ``ceil(n_tokens / L)`` packed contexts; a text shorter than one context is
    used whole as a single context (``L'`` = its length), with a note saying so."""
    from actlab.data import doc_tokens, iter_contexts

    n_ctx = max(1, math.ceil(n_tokens / L))
    rows = [c[0] for c, _ in zip(iter_contexts(model.tokenizer, docs, L, seed), range(n_ctx))]
    if rows:
        return torch.stack(rows), []
    n = sum(len(t) for t in doc_tokens(model.tokenizer, docs))
    if n < 2:
        raise ValueError(f"{src} holds {n} token(s); the statistics need at least 2")
    ids = next(iter_contexts(model.tokenizer, docs, n, seed))[0][None]
    return ids, [f"{src} holds only {n} tokens, fewer than one context of {L}: the text's own length ({n} tokens) is "
                 f"used as the context"]


def _split(m: Model, docs: list[str], src: str, cfg: StatsConfig
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, list[str]]:
    """(statistics contexts, held-out contexts, calibration pool, context length, notes) from the packed data;
    short data shrinks what it must (context, statistics tokens, held-out text) and says so in the notes."""
    L = cfg.context_length
    n_stats = max(1, cfg.tokens // L)
    n_eval = math.ceil(max(cfg.ablation_tokens, cfg.eval_tokens) / L)
    n_cal = math.ceil(cfg.calib_contexts * cfg.calib_length / L) if cfg.eval_tokens else 0
    allids, notes = probe_contexts(m, docs, (n_stats + n_eval + n_cal) * L, L, cfg.seed, src)
    L = allids.shape[1]
    if len(allids) < n_stats:
        if not notes:
            notes.append(f"{src} holds {len(allids)} contexts of {L} tokens, fewer than --tokens asks for "
                         f"({n_stats}): the statistics use all {allids.numel()} tokens")
        n_stats = len(allids)
    held = allids[n_stats:n_stats + n_eval]
    if (cfg.ablation_tokens or cfg.eval_tokens) and not len(held):
        notes.append("no held-out text is left after the statistics contexts: the ablation test and the "
                     "calibration study are skipped (give more text or fewer --tokens)")
    return allids[:n_stats], held, allids[n_stats + n_eval:], L, notes


@dataclass
class Report:
    """Everything ``stats.json`` holds (plus the live collector for callers that want the accumulators)."""

    meta: dict
    massive: dict = field(default_factory=dict)
    sparsity: dict = field(default_factory=dict)
    outliers: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for the terminal: tokens and speed, notes, massive activations, MLP sparsity."""
        out = [f"stats over {self.meta['n_tokens']} tokens at {self.timing['tokens_per_s']:.1f} tokens/s"]
        out += [f"note: {n}" for n in self.meta.get("notes", [])]
        if self.massive.get("layers"):
            top = max(self.massive["layers"], key=lambda s: s["top1_max"])
            out.append(f"massive activations: first layer {self.massive['first_layer']}, largest |h| "
                       f"{top['top1_max']:.1f}, recurring channels {self.massive['recurring_channels']}")
        if self.sparsity:
            out.append(f"mean active MLP fraction {self.sparsity['active_frac_mean']:.3f}")
        return "\n".join(out)


def run_stats(cfg: StatsConfig, model: Model | None = None, progress: bool = True) -> Report:
    """Compute the report for ``cfg`` and write it into ``cfg.out`` (locked for the run; see ``write_report``)."""
    from actlab.artifact import folder_lock

    out = Path(cfg.out)
    with folder_lock(out, what="actlab stats"):
        for stale in out.glob(".report-*.tmp"):       # staging folders of a killed run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        return _run(cfg, out, model, progress)


def _run(cfg: StatsConfig, out: Path, model: Model | None, progress: bool) -> Report:
    from tqdm.auto import tqdm

    from actlab import load_model
    from actlab.stats.collect import collect, make_collector
    from actlab.stats.sections import (attention_section, ablation_section, calibration_section, massive_section,
                                       outlier_section, sparsity_section)

    if model is None and not cfg.model:
        raise ValueError("StatsConfig.model is empty: name a model (bundled name, HF folder or .gguf) or pass model=")
    m = model if model is not None else load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    if not m.is_causal_lm:
        raise ValueError(f"actlab stats needs a causal LM with a tokenizer; {m.name} is {m.family}")
    docs, src = _docs(cfg.data)
    ids, held, calib_pool, L, notes = _split(m, docs, src, cfg)
    for n in notes:
        log.warning("%s", n)

    eps = None if cfg.sparsity_eps is None else ("auto" if cfg.sparsity_eps < 0 else cfg.sparsity_eps)
    col, plan = make_collector(m, sparsity_eps=eps, top_k=cfg.top_k)
    t0 = time.perf_counter()
    collect(m, ids, col, plan, cfg.batch_size, progress)
    dt = time.perf_counter() - t0
    rep = Report(meta={"format_version": FORMAT_VERSION, "model": m.name, "revision": m.revision, "data": src,
                       "n_tokens": col.n_tokens, "n_contexts": col.n_seq, "context_length": L, "notes": notes,
                       "config": asdict(cfg)})
    rep.timing = {"stats_pass_s": dt, "tokens_per_s": col.n_tokens / dt, "accumulator_s": col.seconds}
    rep.massive = massive_section(m, col)
    rep.sparsity = sparsity_section(m, col)
    rep.outliers, heat = outlier_section(col)
    first = rep.massive.get("first_layer")
    steps = [("ablation test", bool(cfg.ablation_tokens and first is not None and len(held))),
             ("attention sink", bool(cfg.sink_contexts and first is not None)),
             ("calibration study", bool(cfg.eval_tokens and len(held))), ("writing the report", True)]
    bar = tqdm(total=sum(on for _, on in steps), desc="stats", unit="section", disable=not progress,
               dynamic_ncols=True, mininterval=0)
    try:
        for name, on in steps:
            if not on:
                continue
            bar.set_description(f"stats: {name}")
            if name == "ablation test":
                rep.massive["ablation"] = ablation_section(m, col, held[: math.ceil(cfg.ablation_tokens / L)],
                                                           first, cfg.batch_size, progress)
            elif name == "attention sink":
                rep.massive["attention_sink"] = attention_section(m, ids[: cfg.sink_contexts], first)
            elif name == "calibration study":
                rep.calibration = calibration_section(m, docs, held[: math.ceil(cfg.eval_tokens / L)], calib_pool,
                                                      cfg, progress)
            else:
                rep.timing["total_s"] = time.perf_counter() - t0
                write_report(rep, out, heat, ids)
            bar.update(1)
    finally:
        bar.close()
    return rep


def write_report(rep: Report, out: Path, heat: dict[str, np.ndarray], ids: torch.Tensor | None = None) -> None:
    """stats.json, report.md, the PNG plots and inputs.safetensors, all or nothing: each file is written into a
    staging folder inside ``out`` and only when every one is complete are they renamed into place (renames need no
    space), so a failure (a full disk) leaves the previous complete report and no temporary file behind."""
    from actlab.artifact import ArtifactError, atomic_write_json, atomic_write_text, fsync_dir, save_tensors
    from actlab.stats import plots
    from actlab.stats.markdown import render

    out = Path(out)
    stage = out / f".report-{os.getpid()}.tmp"
    try:
        out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        d = asdict(rep)
        atomic_write_json(stage / STATS_JSON, _jsonable(d))
        if ids is not None:
            save_tensors(stage / INPUTS, {"input_ids": ids})
        if rep.massive.get("layers"):
            plots.plot_massive(rep.massive["layers"], stage / PLOTS["massive"])
        if rep.sparsity.get("layers"):
            plots.plot_sparsity(rep.sparsity["layers"], stage / PLOTS["sparsity"])
        if heat:
            plots.plot_channel_ranges(heat, stage / PLOTS["ranges"])
        if rep.calibration.get("rows"):
            plots.plot_calibration(rep.calibration["fp_ppl"], rep.calibration["rows"], stage / PLOTS["calibration"])
        atomic_write_text(stage / REPORT_MD, render(d, PLOTS, stage))
        names = sorted(p.name for p in stage.iterdir())
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(e, OSError):
            raise ArtifactError(f"could not write the report into {out}: {e}; the previous report (if any) is "
                                f"unchanged") from e
        if isinstance(e, ArtifactError):
            raise ArtifactError(f"{e}; the previous report in {out} (if any) is unchanged") from e
        raise
    for name in names:
        os.replace(stage / name, out / name)
    fsync_dir(out)
    stage.rmdir()


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return _jsonable(x.item())
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    return x
