"""Trainer for every dictionary architecture: Adam with warm-up and linear decay, activation normalisation,
decoder-row normalisation, dead-latent tracking (AuxK revival for TopK), gradient clipping, JSONL metrics,
periodic checkpoints with exact resume, and data-parallel gradient averaging under torchrun."""
from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from actlab.artifact import (
    atomic_write_bytes,
    atomic_write_json,
    folder_lock,
    load_tensors,
    read_json,
    save_tensors,
)
from actlab.dictionary.base import DictConfig, Dictionary, build
from actlab.dictionary.data import Batch, Source, check_batch

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """How to train (the dictionary's shape lives in DictConfig)."""

    total_tokens: int = field(default=10_000_000, metadata={"alias": ["--tokens"]})  # CLI: --tokens too
    """Training rows (tokens) to consume over all ranks; epochs repeat over the source when it runs out."""
    batch_size: int = 4096
    """Rows per optimizer step and rank (a torchrun step sees batch_size * world rows)."""
    lr: float | None = None
    """Adam learning rate; None: ``default_lr``: 6e-4 * sqrt(16384 / d_sae) for TopK-family, 4e-4 otherwise."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up steps."""
    decay_start: float = 0.8
    """Fraction of training after which the learning rate decays linearly to 0 (1.0 disables decay)."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    normalize: str = "expected_norm"
    """'expected_norm': scale inputs so E||x|| = sqrt(d_in) (folded into the weights at the end); 'none'."""
    dead_tokens: int = 1_000_000
    """A latent that has not fired for this many tokens is dead (AuxK target; reported as dead fraction)."""
    seed: int = 0
    """Seed of the initialisation and of the data order."""
    out: str | None = None
    """Output folder: final dictionary, metrics.jsonl, checkpoints (None: keep in memory only)."""
    checkpoint_every: int = 0
    """Also save a resumable checkpoint every N steps (0: by time only)."""
    checkpoint_minutes: float = 5.0
    """Save a resumable checkpoint when this many minutes passed since the last one, and at the end (0: off)."""
    resume: bool = True
    """Continue from the latest checkpoint in ``out`` when there is one (saying so)."""
    overwrite: bool = False
    """Train into an ``out`` that holds a finished dictionary or another run's checkpoint, replacing it."""
    log_every: int = 10
    """Steps between metric lines in metrics.jsonl."""
    progress: bool = True
    """Show a tqdm progress bar (rank 0)."""
    deterministic: bool = False
    """torch.use_deterministic_algorithms(True) for bit-exact reruns."""
    train_device: str = "cpu"
    """Where the dictionary trains ('cpu', 'cuda', 'cuda:1', ...); batches are moved there (the CLI's --device is
    the model's)."""
    dry_run: bool = False
    """Print the estimate (time from a few calibration steps, peak memory, disk) and stop without training."""
    estimate: bool = True
    """Print that estimate before training, and refuse to start when the output's disk cannot hold the result."""
    precision: str = "auto"
    """TopK family: dtype of the encoder GEMM and latent selection, 'fp32', 'bf16' or 'auto' (bf16 where the hardware
    has native bf16: AVX512-BF16/AMX CPUs, bf16 GPUs); activations, decoder, gradients and Adam stay fp32."""

    def __post_init__(self):
        if self.batch_size < 1 or self.total_tokens < self.batch_size:
            raise ValueError(f"need batch_size >= 1 and total_tokens >= batch_size; got {self.batch_size}, "
                             f"{self.total_tokens}")
        if self.checkpoint_every < 0 or self.checkpoint_minutes < 0:
            raise ValueError(f"checkpoint_every and checkpoint_minutes must be >= 0; got {self.checkpoint_every}, "
                             f"{self.checkpoint_minutes}")
        from actlab.dictionary.precision import PRECISIONS
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")
        if self.normalize not in ("expected_norm", "none"):
            raise ValueError(f"normalize must be 'expected_norm' or 'none'; got {self.normalize!r}")
        self.betas = tuple(self.betas)


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens: int = 0
    scale_in: float = 1.0
    scale_out: float = 1.0
    initialised: bool = False


def _adam(params, lr: float, betas) -> torch.optim.Optimizer:
    """Adam, fused (one pass per tensor) where this torch supports it: several times faster on CPU."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=betas)


def default_lr(cfg: DictConfig) -> float:
    """TopK family: 3x the TopK paper's ``2e-4 / sqrt(d_sae / 2^14)``, whose 1/sqrt(d_sae) scaling it keeps.

    Why 3x: at the batch sizes (256-4096) and horizons (1e3-1e4 steps) actlab trains at, the paper's rate is too
    low: held-out FVU on fresh SmolLM2 rows (d 576, 2048 latents, k 32, 1340 steps of 256) 0.196 at 1x, 0.175 at
    2x, 0.168 at 3x, 0.167 at 4x, 0.184 at 8x, with 0.3 / 1.8 / 4.6 / 8.4 / 29 % latents never firing; on a planted
    bank (d 128, 512 true atoms, 2000 steps of 1024) 0.248 at 1x, 0.176 at 3x (bench/sae_quality.py --lr)."""
    if cfg.arch in ("topk", "batchtopk", "gsae"):
        return 6e-4 * math.sqrt(2 ** 14 / cfg.d_sae)
    return 4e-4


class Trainer:
    """``Trainer(dict_cfg, train_cfg, source).fit()`` -> trained Dictionary (weights in raw activation units)."""

    CKPT_POINTER = "checkpoint.json"

    def __init__(self, dict_cfg: DictConfig, cfg: TrainConfig, source: Source, data_parallel: bool = True):
        """``data_parallel``: under torchrun, average gradients over ranks (each rank reads its own shard); False
        trains this rank's dictionary alone (one dictionary per site, sites spread over ranks)."""
        from actlab import distributed as D
        self.dcfg, self.cfg, self.source = dict_cfg, cfg, source
        dp = data_parallel and D.is_initialized()
        self.rank, self.world = (D.rank(), D.world_size()) if dp else (0, 1)
        self.is_main = self.rank == 0
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        self.device = torch.device(cfg.train_device)
        self.model: Dictionary = build(dict_cfg, seed=cfg.seed).to(self.device)
        if hasattr(self.model, "select_dtype") and dict_cfg.fused:
            from actlab.dictionary.precision import select_dtype
            self.model.select_dtype = select_dtype(cfg.precision, self.model.W_enc.device)
        lr = cfg.lr if cfg.lr is not None else default_lr(dict_cfg)
        self.lr = lr
        self.opt = _adam(self.model.parameters(), lr, cfg.betas)
        if getattr(self.model, "grads_in_place", None) is not None and dict_cfg.fused:
            # persistent gradient buffers: the fused kernel adds into them (no fresh [n, d] tensors per step)
            self.model.grads_in_place = True
            for p in self.model.parameters():
                p.grad = torch.zeros_like(p)
        self.total_steps = max(cfg.total_tokens // (cfg.batch_size * self.world), 1)   # tokens over all ranks
        self.state = TrainState()
        self.since_fired = torch.zeros(dict_cfg.d_sae, dtype=torch.long, device=self.device)
        self.out = Path(cfg.out) if cfg.out else None
        self.history: list[dict] = []
        self.resumed_from: str | None = None
        if self.out is not None:
            with self._lock():
                self._prepare_out()

    # -- schedule --------------------------------------------------------------------------------------
    def lr_factor(self, step: int) -> float:
        c = self.cfg
        f = min(1.0, (step + 1) / max(c.warmup_steps, 1))
        start = int(c.decay_start * self.total_steps)
        if c.decay_start < 1.0 and step >= start:
            f *= max(0.0, (self.total_steps - step) / max(self.total_steps - start, 1))
        return f

    # -- data ------------------------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        st = self.state
        while True:
            it = self.source(st.epoch)
            got = False
            for i, b in enumerate(it):
                if i < st.batch_in_epoch:
                    continue
                got = True
                st.batch_in_epoch = i + 1
                yield self._split(b)
            if not got and st.batch_in_epoch == 0:
                raise ValueError("the data source yielded no full batch: fewer rows than batch_size?")
            st.epoch += 1
            st.batch_in_epoch = 0

    def _split(self, b: Batch):
        d = self.dcfg
        if isinstance(b, torch.Tensor):
            x, y, g = b, None, None
        else:
            x, y, g = (list(b) + [None, None])[:3]
        x, y, g = (t.to(self.device, non_blocking=True) if isinstance(t, torch.Tensor) else t for t in (x, y, g))
        x = check_batch(x.float(), d.d_in, f"input activations at {d.site or 'the site'}")
        if d.is_transcoder:
            if y is None:
                raise ValueError("a transcoder needs (x, y) batches: give an output site (site_out)")
            y = check_batch(y.float(), d.out_dim, f"target activations at {d.site_out or 'the output site'}")
        elif y is None:
            y = x
        return x, y, g

    def _lock(self):
        """Exclusive advisory lock on ``out`` (rank 0): a second training into the same folder is refused."""
        import contextlib
        if self.out is None or not self.is_main:
            return contextlib.nullcontext()
        return folder_lock(self.out, what=f"training a dictionary ({self.dcfg.arch} {self.dcfg.site})")

    # -- training --------------------------------------------------------------------------------------
    def fit(self) -> Dictionary:
        """Train to ``total_tokens`` (continuing a resumed run), holding the output folder's lock."""
        with self._lock():
            return self._fit()

    def _fit(self) -> Dictionary:
        from actlab import distributed as D
        c, st, m = self.cfg, self.state, self.model
        bar = None
        if c.progress and self.is_main:
            from tqdm.auto import tqdm
            bar = tqdm(total=self.total_steps, initial=st.step, desc=f"train {self.dcfg.arch} {self.dcfg.site}",
                       unit="step", dynamic_ncols=True)
        batches = self._batches()
        t_last, tok_last = time.perf_counter(), st.tokens
        t_ckpt = time.monotonic()
        m.train()
        while st.step < self.total_steps:
            x, y, g = next(batches)
            if not st.initialised:
                self._init_from(x, y)
            x = x * st.scale_in
            y = y * st.scale_out if self.dcfg.is_transcoder else x
            dead = self.since_fired >= c.dead_tokens
            for pg in self.opt.param_groups:
                pg["lr"] = self.lr * self.lr_factor(st.step)
            out = m.step(x, y, dead=dead, grad=g)
            self.opt.zero_grad(set_to_none=not getattr(m, "grads_in_place", False))
            out.loss.backward()
            fired = out.fired
            if self.world > 1:
                for p in m.parameters():
                    if p.grad is not None:
                        D.all_reduce_sum(p.grad).div_(self.world)
                fired = D.all_reduce_sum(fired.long()) > 0
            m.before_optimizer_step()
            if c.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(m.parameters(), c.grad_clip)
            self.opt.step()
            m.after_optimizer_step()
            n_tok = x.shape[0] * self.world
            self.since_fired += n_tok
            self.since_fired[fired] = 0
            st.step += 1
            st.tokens += n_tok
            rec = {"step": st.step, "tokens": st.tokens, "loss": float(out.loss.detach()), "l0": out.l0,
                   "dead_frac": float((self.since_fired >= c.dead_tokens).float().mean()),
                   "lr": self.opt.param_groups[0]["lr"], **out.extra}
            if bar is not None:
                bar.update(1)
                bar.set_postfix(l0=f"{out.l0:.1f}", fvu=f"{out.extra.get('fvu', float('nan')):.3f}",
                                dead=f"{rec['dead_frac']:.2f}")
            if st.step % c.log_every == 0 or st.step == self.total_steps:
                now = time.perf_counter()
                rec["tokens_per_s"] = (st.tokens - tok_last) / max(now - t_last, 1e-9)
                t_last, tok_last = now, st.tokens
                self.history.append(rec)
                self._log(rec)
            due = c.checkpoint_every and st.step % c.checkpoint_every == 0
            due = due or (c.checkpoint_minutes and time.monotonic() - t_ckpt >= 60 * c.checkpoint_minutes)
            if due and st.step < self.total_steps:
                self.save_checkpoint()
                t_ckpt = time.monotonic()
        if bar is not None:
            bar.close()
        if self.world > 1:   # buffers such as the BatchTopK threshold are tracked per rank: average them
            for b in m.buffers():
                if b.is_floating_point():
                    D.all_reduce_sum(b).div_(self.world)
        m.eval()
        if self.out is not None and (c.checkpoint_minutes or c.checkpoint_every):
            self.save_checkpoint()           # the final state: a later, longer run can continue from it
        return self.finish()

    @torch.no_grad()
    def _init_from(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Scales and data-dependent biases from the first batch (averaged over ranks: every rank starts equal)."""
        from actlab import distributed as D
        st, d = self.state, self.dcfg
        norms = torch.stack([x.norm(dim=1).mean(), y.norm(dim=1).mean()]).double()
        if self.world > 1:
            D.all_reduce_sum(norms).div_(self.world)
        if self.cfg.normalize == "expected_norm":
            st.scale_in = math.sqrt(d.d_in) / max(float(norms[0]), 1e-12)
            st.scale_out = math.sqrt(d.out_dim) / max(float(norms[1]), 1e-12) if d.is_transcoder else st.scale_in
        self.model.init_from_data(x * st.scale_in, y * st.scale_out)
        if self.world > 1:
            for t in list(self.model.parameters()) + list(self.model.buffers()):
                if t.is_floating_point():
                    D.all_reduce_sum(t.data).div_(self.world)
        st.initialised = True

    def _log(self, rec: dict) -> None:
        if self.out is None or not self.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    def finish(self) -> Dictionary:
        """A copy of the model with the normalisation folded in; saved to ``out`` on rank 0."""
        st = self.state
        final = copy.deepcopy(self.model)
        final.fold_scale(st.scale_in, st.scale_out)
        last = self.history[-1] if self.history else {}
        final.cfg = copy.deepcopy(self.dcfg)
        final.cfg.train = {"tokens": st.tokens, "steps": st.step, "batch_size": self.cfg.batch_size,
                           "lr": self.lr, "normalize": self.cfg.normalize, "scale_in": st.scale_in,
                           "scale_out": st.scale_out, "world": self.world, "seed": self.cfg.seed,
                           "final": {k: v for k, v in last.items() if isinstance(v, (int, float))}}
        if self.out is not None and self.is_main:
            final.save(self.out)
        return final

    # -- checkpoints -----------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        """Model (unfolded), optimizer moments, dead-latent counters and data position -> out/ckpt-<step>/."""
        if self.out is None or not self.is_main:
            return None
        st = self.state
        folder = self.out / f"ckpt-{st.step:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in self.model.state_dict().items()}
        names = {id(p): n for n, p in self.model.named_parameters()}
        for p, s in self.opt.state.items():
            for k, v in s.items():
                tensors[f"opt.{names[id(p)]}.{k}"] = torch.as_tensor(v).contiguous()
        tensors["since_fired"] = self.since_fired.contiguous()
        save_tensors(folder / "state.safetensors", tensors)
        atomic_write_json(folder / "trainer.json", {"format_version": 1, "state": asdict(st),
                                                    "dict_cfg": asdict(self.dcfg), "train_cfg": asdict(self.cfg)})
        prev = self._pointer()
        atomic_write_json(self.out / self.CKPT_POINTER, {"latest": folder.name})
        if prev and prev != folder.name and (self.out / prev).exists():
            shutil.rmtree(self.out / prev)
        return folder

    def _pointer(self) -> str | None:
        p = self.out / self.CKPT_POINTER if self.out else None
        return read_json(p, what="checkpoint pointer")["latest"] if p is not None and p.exists() else None

    def _prepare_out(self) -> None:
        """Refuse to train over a finished dictionary (or a checkpoint we will not resume) unless ``overwrite``;
        resume from the latest checkpoint (saying so), dropping metric lines logged after it."""
        from actlab.dictionary.base import CFG_FILE, WEIGHTS_FILE
        out, c = self.out, self.cfg
        finished = (out / WEIGHTS_FILE).exists()
        ckpt = self._pointer()
        if c.overwrite:
            if self.is_main:
                for name in (WEIGHTS_FILE, CFG_FILE, "metrics.jsonl", self.CKPT_POINTER):
                    (out / name).unlink(missing_ok=True)
                for old in out.glob("ckpt-*"):
                    shutil.rmtree(old, ignore_errors=True)
            return
        if finished:
            raise FileExistsError(f"{out} already holds a finished dictionary ({WEIGHTS_FILE}); choose another "
                                  f"output folder or pass overwrite (--overwrite) to replace it")
        if ckpt is not None and not c.resume:
            raise FileExistsError(f"{out} holds a checkpoint ({ckpt}) of an unfinished run; resume it, or pass "
                                  f"overwrite (--overwrite) to start again from step 0")
        if ckpt is None:
            if (out / "metrics.jsonl").exists() and self.is_main:
                (out / "metrics.jsonl").unlink()     # an earlier run died before its first checkpoint
            return
        self._try_resume()
        self._trim_metrics(self.state.step)
        self.resumed_from = ckpt
        log.warning("resuming from checkpoint %s at step %d of %d (%d tokens); pass overwrite (--overwrite) to "
                    "start again", out / ckpt, self.state.step, self.total_steps, self.state.tokens)

    def _trim_metrics(self, step: int) -> None:
        """Drop metric lines of steps after the checkpoint (they will be logged again)."""
        p = self.out / "metrics.jsonl"
        if not p.exists() or not self.is_main:
            return
        keep = []
        for line in p.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError):
                break                                # a line cut short by the kill: drop it and what follows
        atomic_write_bytes(p, "".join(k + "\n" for k in keep).encode())

    def _try_resume(self) -> None:
        name = self._pointer()
        if name is None:
            return
        folder = self.out / name
        meta = read_json(folder / "trainer.json", what="trainer checkpoint")
        if DictConfig.from_dict(meta["dict_cfg"]) != self.dcfg:
            raise ValueError(f"checkpoint {folder} was made for a different dictionary config; use another "
                             f"--out or resume=False")
        tensors = {k: v.to(self.device) for k, v in load_tensors(folder / "state.safetensors").items()}
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        params = dict(self.model.named_parameters())
        for n, p in params.items():
            s = {k.split(".")[-1]: v for k, v in tensors.items() if k.startswith(f"opt.{n}.")}
            if s:
                self.opt.state[p] = s
        self.since_fired = tensors["since_fired"]
        self.state = TrainState(**meta["state"])
        log.info("resumed from %s at step %d", folder, self.state.step)


def train(dict_cfg: DictConfig, train_cfg: TrainConfig, source: Source) -> Dictionary:
    """Convenience: build a Trainer and fit."""
    return Trainer(dict_cfg, train_cfg, source).fit()
