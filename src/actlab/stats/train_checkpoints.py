"""Train a tiny Llama on the demo corpus (byte-level tokens) and save a checkpoint series ``step-<N>/`` (HF
format, tokenizer included) at log-spaced steps, so massive-activation emergence can be exercised end to end."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class CheckpointSeriesConfig:
    """A tiny causal LM training run that saves a series of checkpoints (``actlab stats train-checkpoints``)."""

    out: str = "ckpts"
    """folder for the step-<N> checkpoint folders"""
    data: str = "demo"
    """text source (.txt/.jsonl/.parquet/folder) or 'demo', the bundled demo corpus (default)"""
    n_layers: int = 4
    """transformer blocks"""
    d_model: int = 128
    """residual width"""
    n_heads: int = 4
    """attention heads"""
    d_ff: int = 512
    """MLP hidden width"""
    context_length: int = 128
    """tokens per training context"""
    batch_size: int = 16
    """contexts per step"""
    steps: int = 400
    """optimizer steps"""
    lr: float = 3e-3
    """AdamW peak learning rate (cosine decay, 20-step warm-up)"""
    n_checkpoints: int = 10
    """checkpoints saved at log-spaced steps, step 0 included"""
    max_tokens: int = 400000
    """training tokens taken from the corpus"""
    seed: int = 0
    """seed"""

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_checkpoints < 2 or self.steps < 1:
            raise ValueError("need steps >= 1 and n_checkpoints >= 2")


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """``n`` distinct log-spaced steps in [0, steps], 0 and ``steps`` included."""
    s = {0, steps} | set(np.unique(np.geomspace(1, steps, n - 1).round().astype(int)).tolist())
    return sorted(s)


def train_checkpoints(cfg: CheckpointSeriesConfig, progress: bool = True) -> list[Path]:
    """Run the training and return the checkpoint folders (the output folder is locked for the run)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from actlab.artifact import folder_lock
    from actlab.data import load_texts
    from actlab.models import byte_tokenizer

    torch.manual_seed(cfg.seed)
    tok = byte_tokenizer()
    docs = load_texts(cfg.data or None)
    ids: list[int] = []
    for d in docs:
        ids += tok(d, add_special_tokens=True)["input_ids"]
        if len(ids) >= cfg.max_tokens:
            break
    data = torch.tensor(ids[: cfg.max_tokens])
    n_ctx = len(data) // cfg.context_length
    if n_ctx < cfg.batch_size:
        raise ValueError(f"the corpus gives {n_ctx} contexts of {cfg.context_length}; need >= {cfg.batch_size}")
    data = data[: n_ctx * cfg.context_length].view(n_ctx, cfg.context_length)
    mcfg = LlamaConfig(vocab_size=len(tok), hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
                       num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                       num_key_value_heads=cfg.n_heads, max_position_embeddings=max(512, cfg.context_length),
                       bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.1, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + np.cos(np.pi * min(s, cfg.steps) / cfg.steps)))
    save_at = set(checkpoint_steps(cfg.steps, cfg.n_checkpoints))
    out = Path(cfg.out)
    with folder_lock(out, what="actlab stats train-checkpoints"):
        return _train(cfg, model, tok, data, out, save_at, opt, sched, progress)


def _train(cfg: CheckpointSeriesConfig, model, tok, data: torch.Tensor, out: Path, save_at: set[int], opt, sched,
           progress: bool) -> list[Path]:
    from tqdm.auto import tqdm

    n_ctx = len(data)
    paths = []
    g = torch.Generator().manual_seed(cfg.seed)
    for step in tqdm(range(cfg.steps + 1), desc="train", disable=not progress):
        if step in save_at:
            paths.append(_save(model, tok, out / f"step-{step}", step))
        if step == cfg.steps:
            break
        x = data[torch.randint(n_ctx, (cfg.batch_size,), generator=g)]
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            log.info("step %d loss %.3f", step, loss.item())
    return paths


def _save(model, tok, path: Path, step: int) -> Path:
    """An HF folder (config.json, model.safetensors through actlab.artifact, the tokenizer's own files), written
    into a temporary folder and renamed (a crash never leaves a half-written step-<N>)."""
    import shutil

    from actlab.artifact import atomic_write_json, save_tensors

    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.config.actlab_step = step
    model.config.architectures = [type(model).__name__]   # what save_pretrained records, so loaders pick the LM
    save_tensors(tmp / "model.safetensors", {k: v.detach() for k, v in model.state_dict().items()},
                 metadata={"format": "pt"})
    atomic_write_json(tmp / "config.json", model.config.to_dict())
    tok.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path
