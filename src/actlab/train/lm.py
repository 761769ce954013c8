"""Real-model touch (training-dynamics.md §6): train a small GPT-2-style LM (ReLU MLPs, byte-level tokens) on the
demo corpus for a few minutes and track, at log-spaced checkpoints, per-layer massive-activation magnitudes
(``blocks.i.resid_post``) and MLP activation sparsity (``blocks.i.mlp_act``) on a fixed probe set, with the
emergence curves of ``actlab.stats`` fitted per layer. The loop, the schedule and the corpus are those of
``actlab.stats.train_checkpoints`` (one trainer for both); run outside the test suite (``actlab train
lm-emergence``) except at toy size."""
from __future__ import annotations

import logging
from dataclasses import asdict

import torch

from actlab.train.configs import LmEmergenceConfig

log = logging.getLogger(__name__)


def series_config(cfg: LmEmergenceConfig):
    """The ``actlab.stats.CheckpointSeriesConfig`` of this run (same corpus, sizes, optimiser, schedule, seed)."""
    from actlab.stats import CheckpointSeriesConfig

    return CheckpointSeriesConfig(out=cfg.out, data=cfg.data, n_layers=cfg.n_layers, d_model=cfg.d_model,
                                  n_heads=cfg.n_heads, d_ff=cfg.d_ff, context_length=cfg.context,
                                  batch_size=cfg.batch, steps=cfg.steps, lr=cfg.lr, n_checkpoints=cfg.n_checkpoints,
                                  max_tokens=cfg.max_tokens, seed=cfg.seed)


def corpus_contexts(cfg: LmEmergenceConfig, tok) -> torch.Tensor:
    """``[n, context]`` token ids from the corpus (``cfg.data``, default the bundled demo corpus), enough for a batch
    plus the probe contexts."""
    return series_config(cfg).contexts(tok, extra=cfg.probe_contexts)


def make_lm(cfg: LmEmergenceConfig, vocab: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(cfg.seed)
    mcfg = GPT2Config(vocab_size=vocab, n_positions=cfg.context, n_embd=cfg.d_model, n_layer=cfg.n_layers,
                      n_head=cfg.n_heads, n_inner=cfg.d_ff, activation_function="relu", resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    mcfg._attn_implementation = "eager"
    return GPT2LMHeadModel(mcfg)


def run_lm_emergence(cfg: LmEmergenceConfig, progress: bool = False) -> dict:
    """Train, track, fit; writes ``metrics.jsonl``, ``checkpoints/step-<N>/``, ``lm_emergence.png`` and
    ``lm_emergence.json`` (fits per layer) into ``cfg.out``."""
    from actlab import Model
    from actlab.models import byte_tokenizer
    from actlab.stats import train_checkpoints
    from actlab.train.metrics import loss_metric, massive_metric, sparsity_metric
    from actlab.train.report import write_json
    from actlab.train.tracker import CheckpointTracker

    tok = byte_tokenizer()
    data = corpus_contexts(cfg, tok)
    probe, train = data[: cfg.probe_contexts], data[cfg.probe_contexts:]
    model = Model(make_lm(cfg, len(tok)).train(), tok, name="lm-emergence")
    sites = [f"blocks.{i}.resid_post" for i in range(cfg.n_layers)]
    acts = [f"blocks.{i}.mlp_act" for i in range(cfg.n_layers)]
    tracker = CheckpointTracker(cfg.out, cfg.steps, cfg.n_checkpoints, metrics={
        "massive": massive_metric(sites, probe), "sparsity": sparsity_metric(acts, probe),
        "probe_loss": loss_metric(lambda m: m(probe, labels=probe).loss)})

    def on_checkpoint(step: int, _module, loss: float | None):
        return tracker.on_step_end(step, model, **({} if loss is None else {"train_loss": loss}))

    train_checkpoints(series_config(cfg), progress, module=model.module, contexts=train, on_checkpoint=on_checkpoint,
                      save_at=tracker.steps)
    fits = {}
    for key in ("massive.top1", "massive.ratio", "sparsity") if cfg.fit else ():
        try:
            fits[key] = [{"params": f.params, "r2": f.r2} for f in tracker.fit_emergence(key)]
        except (RuntimeError, ValueError) as e:
            fits[key] = {"error": str(e)}
    tracker.plot(["probe_loss", "massive.top1", "massive.ratio", "sparsity"], name="lm_emergence.png")
    rep = {"config": asdict(cfg), "steps": tracker.steps, "records": tracker.records, "fits": fits}
    write_json(cfg.out, "lm_emergence.json", rep)
    return rep
