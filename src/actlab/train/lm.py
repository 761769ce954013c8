"""Real-model touch (training-dynamics.md §6): train a small GPT-2-style LM (ReLU MLPs, byte-level tokens) on the
demo corpus for a few minutes and track, at log-spaced checkpoints, per-layer massive-activation magnitudes
(``blocks.i.resid_post``) and MLP activation sparsity (``blocks.i.mlp_act``) on a fixed probe set, with the
emergence curves of ``actlab.stats`` fitted per layer. Run outside the test suite (``actlab train lm-emergence``)."""
from __future__ import annotations

import logging
import math
from dataclasses import asdict

import torch

from actlab.train.configs import LmEmergenceConfig

log = logging.getLogger(__name__)


def corpus_contexts(cfg: LmEmergenceConfig, tok) -> torch.Tensor:
    """``[n, context]`` token ids from the corpus (``cfg.data``, default the bundled demo corpus)."""
    from actlab.data import load_texts

    ids: list[int] = []
    for d in load_texts(None if cfg.data in ("", "demo") else cfg.data):
        ids += tok(d, add_special_tokens=True)["input_ids"]
        if len(ids) >= cfg.max_tokens:
            break
    n = len(ids) // cfg.context
    if n < cfg.batch + cfg.probe_contexts:
        raise ValueError(f"the corpus gives {n} contexts of {cfg.context} tokens; need >= "
                         f"{cfg.batch + cfg.probe_contexts} (batch + probe contexts)")
    return torch.tensor(ids[: n * cfg.context]).view(n, cfg.context)


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
    opt = torch.optim.AdamW(model.module.parameters(), lr=cfg.lr, weight_decay=0.1, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    g = torch.Generator().manual_seed(cfg.seed)
    loss = None
    for step in range(cfg.steps + 1):
        tracker.on_step_end(step, model, **({} if loss is None else {"train_loss": loss}))
        if step == cfg.steps:
            break
        x = train[torch.randint(len(train), (cfg.batch,), generator=g)]
        out = model(x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        out.backward()
        torch.nn.utils.clip_grad_norm_(model.module.parameters(), 1.0)
        opt.step()
        sched.step()
        loss = out.item()
        if progress and step % 50 == 0:
            log.info("step %d loss %.3f", step, loss)
    fits = {}
    for key in ("massive.top1", "massive.ratio", "sparsity"):
        try:
            fits[key] = [{"params": f.params, "r2": f.r2} for f in tracker.fit_emergence(key)]
        except (RuntimeError, ValueError) as e:
            fits[key] = {"error": str(e)}
    tracker.plot(["probe_loss", "massive.top1", "massive.ratio", "sparsity"], name="lm_emergence.png")
    rep = {"config": asdict(cfg), "steps": tracker.steps, "records": tracker.records, "fits": fits}
    write_json(cfg.out, "lm_emergence.json", rep)
    return rep
