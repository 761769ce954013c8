"""Logit lens (nostalgebraist 2020): read any residual site out through the final norm and unembedding, and compare
each layer's distribution with the model's own (KL(final || lens), rank of the model's top token, top tokens).

A ``TunedLens`` (actlab.lens.tuned) plugs in as ``lens=``: its translator for a layer is applied before read-out.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from actlab.lens.readout import _require_head, readout

if TYPE_CHECKING:
    from actlab.lens.tuned import TunedLens
    from actlab.models import Model

Tensor = torch.Tensor


def resid_sites(model: Model, layers: Sequence[int] | None = None, kind: str = "resid_post") -> list[str]:
    """``blocks.{i}.<kind>`` for ``layers`` (default every layer)."""
    layers = range(model.adapter.n_layers) if layers is None else layers
    return [f"blocks.{int(i)}.{kind}" for i in layers]


def site_layer(site: str) -> int | None:
    """The block index of ``blocks.{i}.*`` (None for ``embed`` and other global sites)."""
    parts = site.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else None


def kl_final_lens(final_logits: Tensor, lens_logits: Tensor) -> Tensor:
    """KL(final || lens) in nats over the last dim, in float32: ``sum p_final (log p_final - log p_lens)``."""
    lp = torch.log_softmax(final_logits.float(), -1)
    lq = torch.log_softmax(lens_logits.float(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def rank_of(logits: Tensor, token: Tensor) -> Tensor:
    """Rank (0 = top) of ``token [...]`` in ``logits [..., vocab]``: how many tokens score strictly higher."""
    ref = logits.gather(-1, token[..., None])
    return (logits > ref).sum(-1)


@dataclass
class LensResult:
    """Per site and token: the lens logits and how far they are from the model's final distribution.

    Shapes: ``logits [site, batch, pos, vocab]`` (float32; kept unless ``keep_logits=False``), ``kl [site, batch,
    pos]`` = KL(final || lens) in nats, ``rank [site, batch, pos]`` = rank of the model's top-1 token under the
    lens, ``top_ids [site, batch, pos, k]``; ``final_logits [batch, pos, vocab]``; ``input_ids``/``mask [batch,
    pos]`` (mask False at left padding; statistics average over real tokens only)."""

    sites: list[str]
    kl: Tensor
    rank: Tensor
    top_ids: Tensor
    final_logits: Tensor
    input_ids: Tensor
    mask: Tensor
    logits: Tensor | None = None
    lens: str = "logit"
    meta: dict[str, Any] = field(default_factory=dict)

    def mean_kl(self) -> Tensor:
        """``[site]``: KL(final || lens) averaged over real tokens."""
        m = self.mask.float()
        return (self.kl * m).sum((1, 2)) / m.sum()

    def top1_agreement(self) -> Tensor:
        """``[site]``: fraction of real tokens where the lens' top token is the model's."""
        m = self.mask.float()
        return ((self.rank == 0).float() * m).sum((1, 2)) / m.sum()

    def token_table(self, tokenizer: Any, row: int = 0, position: int = -1, k: int = 5) -> str:
        """A markdown table: per site, the lens' top-k tokens at one (row, column) with KL and the top token's rank.

        ``position`` indexes the padded columns (-1: the last token of every left-padded row)."""
        dec = (lambda i: repr(tokenizer.decode([int(i)]))) if tokenizer is not None else (lambda i: str(int(i)))
        j = position % self.mask.shape[1]
        if not bool(self.mask[row, j]):
            raise ValueError(f"row {row}, column {position} is padding; pick a real token")
        lines = [f"| site | KL(final‖lens) | rank of model's top token | top-{k} lens tokens |", "|---|---|---|---|"]
        for s, site in enumerate(self.sites):
            toks = ", ".join(dec(i) for i in self.top_ids[s, row, j, :k])
            lines.append(f"| {site} | {float(self.kl[s, row, j]):.3f} | {int(self.rank[s, row, j])} | {toks} |")
        final = ", ".join(dec(i) for i in self.final_logits[row, j].topk(k).indices)
        lines.append(f"| (model) | 0 | 0 | {final} |")
        return "\n".join(lines)

    def plot(self, path: str) -> str:
        """A PNG of mean KL and mean top-token rank per site (written atomically); returns the path."""
        from actlab.lens.plots import plot_lens

        return plot_lens(self, path)


def _encode(model: Model, inputs: Any) -> dict[str, Tensor]:
    if isinstance(inputs, dict) or hasattr(inputs, "keys"):
        enc = {k: v.to(model.device) if isinstance(v, Tensor) else v for k, v in dict(inputs).items()}
    elif isinstance(inputs, Tensor):
        x = inputs if inputs.dim() == 2 else inputs[None]
        enc = {"input_ids": x.to(model.device), "attention_mask": torch.ones_like(x, device=model.device)}
    else:
        enc = model.tokenize(inputs)
    if "attention_mask" not in enc:
        enc["attention_mask"] = torch.ones_like(enc["input_ids"])
    return enc


@torch.no_grad()
def logit_lens(model: Model, inputs: Any, sites: str | Sequence[str] | None = None, *,
               lens: TunedLens | None = None, k: int = 10, keep_logits: bool = True) -> LensResult:
    """Read each site out through the final norm and unembedding (after ``lens``' translator when given).

    ``inputs``: text(s), token ids ``[batch, pos]`` or a tokenized dict (left padding keeps each row's numbers
    independent of its batch mates). ``sites``: residual-stream sites (default every ``blocks.{i}.resid_post``);
    a tuned lens needs sites it has a translator for. One forward pass records the sites and the model's logits.
    """
    _require_head(model)
    sites = resid_sites(model) if sites is None else [sites] if isinstance(sites, str) else list(sites)
    if not sites:
        raise ValueError("logit_lens needs at least one site")
    model.check_sites(sites)
    if lens is not None:
        lens.check_model(model)
        missing = [s for s in sites if not lens.has(s)]
        if missing:
            raise KeyError(f"the tuned lens has no translator for {missing}; it was trained for {lens.sites}")
    enc = _encode(model, inputs)
    acts = model.record(enc, list(dict.fromkeys([*sites, "logits"])), stop_early=False)
    final = acts["logits"].float()
    mask = enc["attention_mask"].bool()
    top_final = final.argmax(-1)
    kls, ranks, tops, all_logits = [], [], [], []
    for s in sites:
        h = acts[s]
        if lens is not None:
            h = lens.translate(s, h)
        lg = readout(model, h).float()
        kls.append(kl_final_lens(final, lg))
        ranks.append(rank_of(lg, top_final))
        tops.append(lg.topk(min(k, lg.shape[-1]), -1).indices)
        if keep_logits:
            all_logits.append(lg)
    return LensResult(sites, torch.stack(kls), torch.stack(ranks), torch.stack(tops), final,
                      enc["input_ids"], mask, torch.stack(all_logits) if keep_logits else None,
                      "tuned" if lens is not None else "logit", {"model": model.name})
