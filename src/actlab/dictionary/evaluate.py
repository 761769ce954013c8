"""Evaluation: reconstruction quality and sparsity on held-out activations, feature density (PNG), and the
downstream cost of splicing the dictionary into the model (cross-entropy vs clean vs zero-ablated)."""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch

from actlab.dictionary.base import Dictionary
from actlab.dictionary.data import check_batch

if TYPE_CHECKING:
    from actlab.models import Model

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Reconstruction metrics over ``tokens`` rows."""

    fvu: float
    """Fraction of variance unexplained: sum ||y - y_hat||^2 / sum ||y - mean(y)||^2 (0 perfect, 1 = mean predictor)."""
    mse: float
    """Mean squared error per element."""
    fvu_channel: float
    """FVU with every channel standardised first: mean over channels of sse_c / var_c. Plain FVU is dominated by
    the few huge ("massive activation") channels of LLM residual streams; this one weighs every channel equally."""
    l0: float
    """Mean number of active latents per token."""
    dead_frac: float
    """Fraction of latents that never fired on these tokens."""
    dense_frac: float
    """Fraction of latents firing on more than ``dense_threshold`` of the tokens."""
    tokens: int
    """Rows evaluated."""
    density: list[float] = field(default_factory=list, repr=False)
    """Per-latent firing frequency."""

    def to_dict(self, with_density: bool = False) -> dict:
        d = asdict(self)
        if not with_density:
            d.pop("density")
        return d


@torch.no_grad()
def evaluate(model: Dictionary, batches: Iterable, max_tokens: int | None = None,
             dense_threshold: float = 0.1) -> EvalResult:
    """Stream ``x`` or ``(x, y)`` batches through the dictionary (exact two-pass-free FVU via running sums)."""
    model.eval()
    n = model.d_sae
    fires = torch.zeros(n, dtype=torch.long)
    sse = l0 = 0.0
    tokens = 0
    s_y = s_yy = sse_c = None
    for b in batches:
        x, y = (b, b) if isinstance(b, torch.Tensor) else (b[0], b[1])
        x = check_batch(x.float(), model.cfg.d_in, "input activations")
        y = check_batch(y.float(), model.cfg.out_dim, "target activations")
        acts, y_hat = model.encode_decode(x)
        y_hat = y_hat.float()
        err = (y_hat - y).double().pow(2).sum(0)
        sse += float(err.sum())
        sse_c = err if sse_c is None else sse_c + err
        active = acts != 0
        l0 += float(active.sum())
        fires += active.sum(0).cpu()
        yd = y.double()
        s_y = yd.sum(0) if s_y is None else s_y + yd.sum(0)
        s_yy = yd.pow(2).sum(0) if s_yy is None else s_yy + yd.pow(2).sum(0)
        tokens += x.shape[0]
        if max_tokens is not None and tokens >= max_tokens:
            break
    if tokens == 0:
        raise ValueError("no evaluation rows")
    var_c = s_yy - s_y.pow(2) / tokens
    total_var = float(var_c.sum())
    live = var_c > 1e-12 * max(float(var_c.max()), 1e-300)  # constant channels carry no variance to explain
    fvu_c = float((sse_c[live] / var_c[live]).mean()) if bool(live.any()) else math.nan
    density = (fires.double() / tokens)
    return EvalResult(fvu=sse / max(total_var, 1e-30), mse=sse / (tokens * model.cfg.out_dim), fvu_channel=fvu_c,
                      l0=l0 / tokens,
                      dead_frac=float((fires == 0).double().mean()),
                      dense_frac=float((density > dense_threshold).double().mean()), tokens=tokens,
                      density=density.tolist())


def density_histogram(density: list[float] | torch.Tensor, path, title: str = "") -> None:
    """log10 feature-density histogram as PNG (dead latents counted in the leftmost bar)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d = torch.as_tensor(density, dtype=torch.float64)
    floor = 1e-7
    vals = torch.log10(d.clamp_min(floor)).numpy()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(vals, bins=60, color="#3465a4")
    ax.set_xlabel("log10 feature density (fraction of tokens firing)")
    ax.set_ylabel("latents")
    ax.set_title(title or f"{int((d == 0).sum())} dead of {d.numel()} (shown at 1e-7)")
    fig.tight_layout()
    import io
    from pathlib import Path

    from actlab.artifact import atomic_write_bytes
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


@dataclass
class SpliceResult:
    """Next-token cross-entropy (nats/token) with the activation replaced."""

    ce_clean: float
    """The unmodified model."""
    ce_spliced: float
    """With the site replaced by the dictionary's reconstruction (transcoders: the MLP output replaced)."""
    ce_zero: float
    """With the site zero-ablated."""
    loss_recovered: float
    """(ce_zero - ce_spliced) / (ce_zero - ce_clean): 1 = no loss, 0 = as bad as zero ablation."""
    delta_loss: float
    """ce_spliced - ce_clean."""
    tokens: int
    """Predicted tokens the CE averages over (scored positions: see ``splice_ce``)."""


def _ce(model, ids: torch.Tensor, mask: torch.Tensor | None, count: torch.Tensor) -> float:
    """Summed next-token CE over the predictions made at positions where ``count`` [B, L] is True."""
    enc = {"input_ids": ids} if mask is None else {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():   # position ids follow the mask: left-padded rows equal their unpadded selves
        logits = model.module(**model.forward_kwargs(enc), use_cache=False).logits.float()
    tgt = ids[:, 1:]
    lp = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                           reduction="none")
    return float(lp[count[:, :-1].reshape(-1)].sum())


def splice_positions(ids: torch.Tensor, mask: torch.Tensor | None, skip_first: int = 1,
                     bos_id: int | None = None) -> torch.Tensor:
    """[B, L] bool: the positions a dictionary is spliced into (and whose next-token predictions are scored).

    Drops padding, the first ``skip_first`` real tokens of each row (left padding aware) and every ``bos_id`` token:
    dictionaries are trained without them (BOS rows carry huge, constant activations), and splicing them turns
    loss recovered negative on real LMs."""
    real = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
    pos = real.long().cumsum(1) - 1                         # position among the row's real tokens
    keep = real & (pos >= skip_first)
    if bos_id is not None:
        keep &= ids != bos_id
    return keep


def splice_fns(dictionary: Dictionary, where: dict | None = None):
    """{site: intervention} pairs that replace the site by the dictionary's output (SAE) or the MLP output by the
    transcoder's prediction from the recorded MLP input; with ``where={"keep": [B, L] bool}`` only at those
    positions (the others keep their clean activations)."""
    c = dictionary.cfg

    def apply(x, act):
        B, L = x.shape[:2]
        flat = x.reshape(B * L, -1).to(dictionary.W_enc.dtype)
        new = dictionary(flat).to(act.dtype).reshape(act.shape)
        keep = None if where is None else where.get("keep")
        if keep is None:
            return new
        return torch.where(keep.reshape(B, L, *([1] * (act.dim() - 2))).to(act.device), new, act)

    if not c.is_transcoder:
        return [(c.site, lambda act, ctx: apply(act, act))]
    held = {}

    def grab(act, ctx):
        held["x"] = act

    def put(act, ctx):
        return apply(held["x"], act)
    return [(c.site, grab), (c.site_out, put)]


def _zero_fn(where: dict):
    def zero(act, ctx):
        keep = where["keep"]
        return act.masked_fill(keep.reshape(*keep.shape, *([1] * (act.dim() - 2))).to(act.device), 0.0)
    return zero


def splice_ce(model: Model, dictionary: Dictionary, inputs, batch_size: int = 8, skip_first: int = 1,
              exclude_bos: bool = True) -> SpliceResult:
    """Clean / spliced / zero-ablated next-token CE over ``inputs`` (texts, or a LongTensor [n, L] of ids).

    The splice and the zero ablation act only on the positions the dictionary was trained on, and only the
    predictions made there are scored: by default not the first real token of each row (``skip_first``) and not
    BOS tokens (``exclude_bos``); ``skip_first=0, exclude_bos=False`` splices and scores every position."""
    c = dictionary.cfg
    if not c.site:
        raise ValueError("the dictionary has no site in its config; set cfg.site (and cfg.site_out)")
    if skip_first < 0:
        raise ValueError(f"skip_first must be >= 0, got {skip_first}")
    if not model.is_causal_lm:
        raise ValueError(f"splice_ce measures next-token cross-entropy, which needs a causal LM; {model.name} "
                         f"({model.family}) is not one")
    model.check_sites([c.site] + ([c.site_out] if c.is_transcoder else []))
    if isinstance(inputs, torch.Tensor):
        chunks = [(inputs[i:i + batch_size], None) for i in range(0, inputs.shape[0], batch_size)]
    else:
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        chunks = []
        for i in range(0, len(texts), batch_size):
            enc = model.tokenize(texts[i:i + batch_size])
            chunks.append((enc["input_ids"], enc["attention_mask"]))
    bos = getattr(model.tokenizer, "bos_token_id", None) if exclude_bos and model.tokenizer is not None else None
    zero_site = c.site_out if c.is_transcoder else c.site
    totals = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
    count = 0
    dictionary.eval()
    where: dict = {}
    for ids, mask in chunks:
        ids = ids.to(model.device)
        mask = mask.to(model.device) if mask is not None else None
        keep = splice_positions(ids, mask, skip_first, bos)
        where["keep"] = keep
        real = torch.ones_like(keep) if mask is None else mask.bool()
        scored = keep.clone()
        scored[:, :-1] &= real[:, 1:]                       # the predicted token must be real too
        scored[:, -1] = False
        totals["clean"] += _ce(model, ids, mask, scored)
        with model.hooks(splice_fns(dictionary, where)):
            totals["spliced"] += _ce(model, ids, mask, scored)
        with model.hooks([(zero_site, _zero_fn(where))]):
            totals["zero"] += _ce(model, ids, mask, scored)
        count += int(scored.sum())
    if count == 0:
        raise ValueError(f"no scored positions: the inputs are too short for skip_first={skip_first}")
    ce = {k: v / count for k, v in totals.items()}
    denom = ce["zero"] - ce["clean"]
    rec = (ce["zero"] - ce["spliced"]) / denom if abs(denom) > 1e-12 else math.nan
    return SpliceResult(ce["clean"], ce["spliced"], ce["zero"], rec, ce["spliced"] - ce["clean"], count)
