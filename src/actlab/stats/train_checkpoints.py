"""Train a tiny causal LM on the demo corpus (byte-level tokens) with checkpoints at log-spaced steps: the one
training loop and the one log-spaced schedule of actlab. ``train_checkpoints`` saves a series ``step-<N>/`` (HF
format, tokenizer included) so massive-activation emergence can be exercised end to end; ``actlab.train``'s
``lm-emergence`` recipe runs the same loop with its own model and a checkpoint tracker as ``on_checkpoint``."""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

WARMUP = 20
"""linear warm-up steps of the learning-rate schedule (then cosine decay to 0 at the last step)"""


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

    def schedule(self) -> list[int]:
        """The steps this run checkpoints at: ``checkpoint_steps(steps, n_checkpoints)``."""
        return checkpoint_steps(self.steps, self.n_checkpoints)

    def contexts(self, tokenizer, extra: int = 0) -> torch.Tensor:
        """``[n, context_length]`` token ids of the corpus (``data``), its first ``max_tokens`` tokens; at least
        ``batch_size + extra`` contexts (``extra``: held-out contexts a caller splits off), else a ValueError."""
        from actlab.data import load_texts

        ids: list[int] = []
        for d in load_texts(None if self.data in ("", "demo") else self.data):
            ids += tokenizer(d, add_special_tokens=True)["input_ids"]
            if len(ids) >= self.max_tokens:
                break
        n = min(len(ids), self.max_tokens) // self.context_length
        if n < self.batch_size + extra:
            raise ValueError(f"the corpus {self.data!r} gives {n} contexts of {self.context_length} tokens "
                             f"(max_tokens={self.max_tokens}); need >= {self.batch_size + extra}")
        return torch.tensor(ids[: n * self.context_length]).view(n, self.context_length)


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """``n`` distinct log-spaced steps in [0, steps], 0 and ``steps`` included (fewer when ``steps`` is small)."""
    if steps < 1 or n < 2:
        raise ValueError(f"need total >= 1 steps and n >= 2 checkpoints; got total={steps}, n={n}")
    s = {0, steps} | set(np.unique(np.geomspace(1, steps, n - 1).round().astype(int)).tolist())
    return sorted(s)


def lr_factor(step: int, steps: int) -> float:
    """Learning-rate multiplier: linear warm-up over ``WARMUP`` steps, cosine decay to 0 at ``steps``."""
    return min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def train_lm(module: torch.nn.Module, contexts: torch.Tensor, cfg: CheckpointSeriesConfig, save_at: Iterable[int],
             on_checkpoint: Callable[[int, torch.nn.Module, float | None], Any], progress: bool = False
             ) -> list[Any]:
    """The training loop: AdamW (weight decay 0.1, betas 0.9/0.95) with ``lr_factor``, gradient clipping at 1,
    ``cfg.batch_size`` contexts drawn per step (seeded by ``cfg.seed``), next-token loss
    ``module(input_ids=x, labels=x).loss``. Before the update of each step in ``save_at`` (and at ``cfg.steps``, the
    end) it calls ``on_checkpoint(step, module, last_loss)`` (``None`` before the first update); returns what those
    calls returned."""
    from tqdm.auto import tqdm

    save_at = set(save_at)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=0.1, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps))
    g = torch.Generator().manual_seed(cfg.seed)
    out, loss = [], None
    module.train()
    for step in tqdm(range(cfg.steps + 1), desc="train", disable=not progress):
        if step in save_at:
            out.append(on_checkpoint(step, module, loss))
        if step == cfg.steps:
            break
        x = contexts[torch.randint(len(contexts), (cfg.batch_size,), generator=g)]
        lo = module(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        lo.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        sched.step()
        loss = lo.item()
        if step % 50 == 0:
            log.info("step %d loss %.3f", step, loss)
    return out


def train_checkpoints(cfg: CheckpointSeriesConfig, progress: bool = True, *, module: torch.nn.Module | None = None,
                      contexts: torch.Tensor | None = None,
                      on_checkpoint: Callable[[int, torch.nn.Module, float | None], Any] | None = None,
                      save_at: Iterable[int] | None = None) -> list[Any]:
    """Run ``train_lm`` on ``cfg``; by default a tiny Llama (seeded by ``cfg.seed``) on ``cfg.contexts``, saving an
    HF folder ``cfg.out/step-<N>/`` at each step of ``cfg.schedule()`` (the output folder is locked for the run),
    and returns the folders. The ``lm-emergence`` recipe of ``actlab.train`` passes its own causal LM ``module``
    (``module(input_ids=, labels=).loss``), ``contexts`` ``[n, context]``, ``on_checkpoint(step, module,
    last_loss)`` and ``save_at`` steps; then it returns what ``on_checkpoint`` returned."""
    from actlab.models import byte_tokenizer

    tok = byte_tokenizer()
    data = contexts if contexts is not None else cfg.contexts(tok)
    steps = cfg.schedule() if save_at is None else save_at
    if module is None:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(cfg.seed)
        module = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
            num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
            max_position_embeddings=max(512, cfg.context_length), bos_token_id=1, eos_token_id=2, pad_token_id=0))
    elif on_checkpoint is None:
        raise ValueError("train_checkpoints(module=...) needs on_checkpoint: the HF step-<N> folders are written only "
                         "for the built-in Llama")
    if on_checkpoint is not None:
        return train_lm(module, data, cfg, steps, on_checkpoint, progress)
    from actlab.artifact import folder_lock

    out = Path(cfg.out)
    with folder_lock(out, what="actlab stats train-checkpoints"):
        return train_lm(module, data, cfg, steps, lambda step, m, _loss: _save(m, tok, out / f"step-{step}", step),
                        progress)


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
