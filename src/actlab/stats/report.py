"""``actlab stats MODEL --data PATH --tokens N --out DIR``: one streaming pass (massive activations, sparsity,
linear-input ranges/outliers), then the ablation test, the attention-sink check and the calibration-set study;
writes ``stats.json``, ``report.md``, PNG plots and ``inputs.safetensors`` (the token ids measured)."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STATS_JSON, REPORT_MD, INPUTS = "stats.json", "report.md", "inputs.safetensors"
PLOTS = {"massive": "massive_per_layer.png", "sparsity": "sparsity_per_layer.png",
         "ranges": "channel_ranges.png", "calibration": "calibration_ppl.png"}


@dataclass
class StatsConfig:
    """What ``actlab stats`` measures and on how much text."""

    model: str
    """bundled model name, HF folder or .gguf"""
    out: str = "stats_out"
    """output folder (report.md, stats.json, PNGs)"""
    data: str | None = None
    """text source (.txt/.jsonl/.parquet/folder, see actlab.data); default: the bundled demo corpus"""
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
    dtype: str = "fp32"
    """model dtype"""
    device: str | None = None
    """torch device"""
    seed: int = 0
    """document order seed"""

    def __post_init__(self):
        if self.tokens < self.context_length:
            raise ValueError(f"--tokens ({self.tokens}) must be at least one context ({self.context_length})")
        if self.batch_size < 1 or self.context_length < 2:
            raise ValueError("batch_size must be >= 1 and context_length >= 2")


def _docs(path: str | None) -> tuple[list[str], str]:
    from actlab.data import demo_corpus, load_texts

    p = demo_corpus() if path is None else Path(path)
    if not Path(p).exists():
        raise FileNotFoundError(f"--data {p} does not exist")
    return load_texts(p), str(p)


def _contexts(model, docs: list[str], n_tokens: int, L: int, seed: int) -> torch.Tensor:
    from actlab.data import pack_contexts

    return pack_contexts(model.tokenizer, docs, L, seed=seed, max_contexts=max(1, math.ceil(n_tokens / L))).input_ids


@dataclass
class Report:
    """Everything ``stats.json`` holds (plus the live collector for callers that want the accumulators)."""

    meta: dict
    massive: dict = field(default_factory=dict)
    sparsity: dict = field(default_factory=dict)
    outliers: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)


def run_stats(cfg: StatsConfig, model=None, progress: bool = True) -> Report:
    """Compute the report for ``cfg`` and write it into ``cfg.out``."""
    from safetensors.torch import save_file

    from actlab import load_model
    from actlab.stats.collect import collect, make_collector

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    m = model if model is not None else load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    if not m.is_causal_lm:
        raise ValueError(f"actlab stats needs a causal LM with a tokenizer; {m.name} is {m.family}")
    docs, src = _docs(cfg.data)
    L = cfg.context_length
    n_stats = max(1, cfg.tokens // L)
    n_eval = math.ceil(max(cfg.ablation_tokens, cfg.eval_tokens) / L)
    n_cal = math.ceil(cfg.calib_contexts * cfg.calib_length / L) if cfg.eval_tokens else 0
    allids = _contexts(m, docs, (n_stats + n_eval + n_cal) * L, L, cfg.seed)
    if len(allids) < n_stats:
        raise ValueError(f"{src} holds only {len(allids)} contexts of {L} tokens; --tokens asks for {n_stats}")
    ids = allids[:n_stats]
    held = allids[n_stats:n_stats + n_eval]
    calib_pool = allids[n_stats + n_eval:]
    tmp = out / f".{INPUTS}.tmp"
    save_file({"input_ids": ids.contiguous()}, str(tmp))
    tmp.replace(out / INPUTS)

    eps = None if cfg.sparsity_eps is None else ("auto" if cfg.sparsity_eps < 0 else cfg.sparsity_eps)
    col, plan = make_collector(m, sparsity_eps=eps, top_k=cfg.top_k)
    t0 = time.perf_counter()
    collect(m, ids, col, plan, cfg.batch_size, progress)
    dt = time.perf_counter() - t0
    rep = Report(meta={"format_version": FORMAT_VERSION, "model": m.name, "revision": m.revision, "data": src,
                       "n_tokens": col.n_tokens, "n_contexts": col.n_seq, "context_length": L,
                       "config": asdict(cfg)})
    rep.timing = {"stats_pass_s": dt, "tokens_per_s": col.n_tokens / dt, "accumulator_s": col.seconds}

    from actlab.stats.sections import (attention_section, ablation_section, calibration_section, massive_section,
                                       outlier_section, sparsity_section)

    rep.massive = massive_section(m, col)
    rep.sparsity = sparsity_section(m, col)
    rep.outliers, heat = outlier_section(col)
    if cfg.ablation_tokens and rep.massive.get("first_layer") is not None and len(held):
        rep.massive["ablation"] = ablation_section(m, col, held[: math.ceil(cfg.ablation_tokens / L)],
                                                   rep.massive["first_layer"], cfg.batch_size)
    if cfg.sink_contexts and rep.massive.get("first_layer") is not None:
        rep.massive["attention_sink"] = attention_section(m, ids[: cfg.sink_contexts], rep.massive["first_layer"])
    if cfg.eval_tokens and len(held):
        rep.calibration = calibration_section(m, docs, held[: math.ceil(cfg.eval_tokens / L)], calib_pool, cfg)
    rep.timing["total_s"] = time.perf_counter() - t0
    write_report(rep, out, heat)
    return rep


def write_report(rep: Report, out: Path, heat: dict[str, np.ndarray]) -> None:
    """stats.json, report.md and the PNG plots, each written atomically."""
    from actlab.stats import plots
    from actlab.stats.markdown import render
    from actlab.utils import atomic_write_bytes, atomic_write_json

    d = asdict(rep)
    atomic_write_json(out / STATS_JSON, _jsonable(d))
    if rep.massive.get("layers"):
        plots.plot_massive(rep.massive["layers"], out / PLOTS["massive"])
    if rep.sparsity.get("layers"):
        plots.plot_sparsity(rep.sparsity["layers"], out / PLOTS["sparsity"])
    if heat:
        plots.plot_channel_ranges(heat, out / PLOTS["ranges"])
    if rep.calibration.get("rows"):
        plots.plot_calibration(rep.calibration["fp_ppl"], rep.calibration["rows"], out / PLOTS["calibration"])
    atomic_write_bytes(out / REPORT_MD, render(d, PLOTS, out).encode())


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
