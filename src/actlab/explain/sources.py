"""Latent sources and row sources for the latent cache.

A *latent source* maps activations ``[n, d]`` to latent values ``[n, n_latents]`` (a dictionary's ``encode``, MLP
neurons as they are, or projections on ``k`` directions). A *row source* yields chunks of rows: activations plus
the token id, document and position of every row, so a cached latent can be shown in its context again. Chunks
have fixed boundaries (chunk ``i`` is always the same rows), which is what makes a resumed cache equal an
uninterrupted one.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from actlab.dictionary import Dictionary
    from actlab.models import Model
    from actlab.store import ActivationStore

Tensor = torch.Tensor


def _digest(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().float().cpu().contiguous()
        h.update(str(list(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


class LatentSource(Protocol):
    """Anything that maps ``[n, d]`` activations to ``[n, n_latents]`` latent values."""

    n_latents: int
    site: str

    def __call__(self, x: Tensor) -> Tensor: ...

    def describe(self) -> dict[str, Any]: ...

    def decoder(self) -> Tensor | None: ...


class DictionaryLatents:
    """The latents of an actlab dictionary (SAE or transcoder): exactly ``dictionary.encode(x)``."""

    def __init__(self, dictionary: Dictionary, path: str = ""):
        self.dictionary = dictionary.eval()
        self.n_latents = dictionary.d_sae
        self.site = dictionary.cfg.site
        self.path = str(path)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        return self.dictionary.encode(x.to(self.dictionary.W_enc.device)).float()

    def describe(self) -> dict[str, Any]:
        d = self.dictionary
        return {"type": "dictionary", "arch": d.cfg.arch, "site": self.site, "path": self.path,
                "n_latents": self.n_latents, "weights": _digest(d.W_enc, d.b_enc, d.W_dec)}

    def decoder(self) -> Tensor:
        """Decoder rows ``[n_latents, d_out]`` (what a latent writes)."""
        return self.dictionary.W_dec.detach().float()


class NeuronLatents:
    """MLP neurons as latents: the identity on a ``blocks.{i}.mlp_act`` site (``[n, d_mlp]``)."""

    def __init__(self, d_mlp: int, site: str, w_out: Tensor | None = None):
        self.n_latents = int(d_mlp)
        self.site = site
        self.w_out = None if w_out is None else w_out.detach().float()

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.n_latents:
            raise ValueError(f"neuron latents expect {self.n_latents} values per row at {self.site}; got "
                             f"{x.shape[-1]}")
        return x.float()

    def describe(self) -> dict[str, Any]:
        return {"type": "neurons", "site": self.site, "n_latents": self.n_latents}

    def decoder(self) -> Tensor | None:
        """The MLP's output weights ``[d_mlp, d_model]`` when given (``model.adapter.W_out(i)``)."""
        return self.w_out


class DirectionLatents:
    """Projections on ``k`` directions ``[k, d]`` (steering directions, probes, factors): ``x @ D.T``."""

    def __init__(self, directions: Tensor, site: str, normalize: bool = True):
        D = directions.detach().float()
        if D.ndim == 1:
            D = D[None]
        if D.ndim != 2 or not torch.isfinite(D).all():
            raise ValueError(f"directions must be a finite [k, d] tensor; got shape {list(directions.shape)}")
        self.D = D / D.norm(dim=1, keepdim=True).clamp_min(1e-12) if normalize else D
        self.n_latents = D.shape[0]
        self.site = site
        self.path = ""

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.D.shape[1]:
            raise ValueError(f"directions have width {self.D.shape[1]}, activations at {self.site} have "
                             f"{x.shape[-1]}")
        return x.float() @ self.D.t()

    def describe(self) -> dict[str, Any]:
        return {"type": "directions", "site": self.site, "path": self.path, "n_latents": self.n_latents,
                "weights": _digest(self.D)}

    def decoder(self) -> Tensor:
        return self.D


@dataclass
class Chunk:
    """Rows ``[n]`` of a row source: activations ``acts [n, d]`` and each row's token id, document and position."""

    acts: Tensor
    tokens: Tensor
    doc: Tensor
    pos: Tensor


class RowSource(Protocol):
    """Chunks with fixed boundaries: ``chunks(start)`` yields chunk ``start``, ``start + 1``, ..."""

    n_chunks: int

    def chunks(self, start: int = 0) -> Iterator[Chunk]: ...

    def describe(self) -> dict[str, Any]: ...


class StoreRows:
    """Rows of one site of an activation store, ``batch_rows`` at a time, in store order (tokens, documents and
    positions from the store's ``_tokens``/``_doc``/``_pos`` columns)."""

    def __init__(self, store: ActivationStore, site: str, batch_rows: int = 4096, max_rows: int | None = None):
        if site not in store.sites:
            raise KeyError(f"the store at {store.path} has no site {site!r}; it holds {store.sites}")
        self.store, self.site, self.batch_rows = store, site, int(batch_rows)
        self.n_rows = len(store) if max_rows is None else min(len(store), int(max_rows))
        self.n_chunks = -(-self.n_rows // self.batch_rows)

    def chunks(self, start: int = 0) -> Iterator[Chunk]:
        for c in range(start, self.n_chunks):
            rows = torch.arange(c * self.batch_rows, min((c + 1) * self.batch_rows, self.n_rows))
            doc, pos = self.store.doc_pos(rows)
            yield Chunk(self.store.read(self.site, rows, dtype=torch.float32), self.store.tokens(rows), doc, pos)

    def describe(self) -> dict[str, Any]:
        m = self.store.manifest
        return {"type": "store", "path": str(self.store.path.resolve()), "identity": m.get("identity"),
                "site": self.site, "rows": self.n_rows, "batch_rows": self.batch_rows,
                "model": (m.get("model") or {}).get("name"),
                "tokenizer": (m.get("tokenizer") or {}).get("name_or_path")}


class TextRows:
    """Rows of a model's site on texts (``model.record``), ``batch_texts`` texts at a time; document = the text's
    index, position = the token's position in the text (its BOS, when the tokenizer adds one, is position 0)."""

    def __init__(self, model: Model, site: str, texts: Sequence[str], batch_texts: int = 8,
                 max_length: int | None = 256):
        model.check_sites([site])
        self.model, self.site, self.texts = model, site, list(texts)
        if not self.texts:
            raise ValueError("TextRows: no texts given")
        self.batch_texts, self.max_length = int(batch_texts), max_length
        self.n_chunks = -(-len(self.texts) // self.batch_texts)

    @torch.no_grad()
    def chunks(self, start: int = 0) -> Iterator[Chunk]:
        for c in range(start, self.n_chunks):
            lo = c * self.batch_texts
            batch = self.texts[lo: lo + self.batch_texts]
            enc = self.model.tokenize(batch, max_length=self.max_length)
            acts = self.model.record(enc, [self.site])[self.site].float()
            mask = enc["attention_mask"].bool().cpu()
            ids = enc["input_ids"].cpu()
            pos = (mask.long().cumsum(1) - 1)
            doc = torch.arange(lo, lo + len(batch))[:, None].expand_as(ids)
            acts = acts.reshape(*acts.shape[:2], -1).cpu()
            yield Chunk(acts[mask], ids[mask], doc[mask], pos[mask])

    def describe(self) -> dict[str, Any]:
        h = hashlib.sha256("\x00".join(self.texts).encode()).hexdigest()[:16]
        return {"type": "texts", "texts_sha256": h, "n_texts": len(self.texts), "site": self.site,
                "batch_texts": self.batch_texts, "max_length": self.max_length, "model": self.model.name,
                "tokenizer": getattr(self.model.tokenizer, "name_or_path", None)}


class TensorRows:
    """Rows held in memory (planted tests, activations computed elsewhere), ``batch_rows`` at a time."""

    def __init__(self, acts: Tensor, tokens: Tensor, doc: Tensor | None = None, pos: Tensor | None = None,
                 batch_rows: int = 4096):
        n = acts.shape[0]
        self.acts, self.tokens = acts, tokens.long().reshape(-1)
        self.doc = torch.zeros(n, dtype=torch.long) if doc is None else doc.long().reshape(-1)
        self.pos = torch.arange(n) if pos is None else pos.long().reshape(-1)
        if not (self.tokens.numel() == self.doc.numel() == self.pos.numel() == n):
            raise ValueError(f"TensorRows: acts has {n} rows but tokens/doc/pos have {self.tokens.numel()}/"
                             f"{self.doc.numel()}/{self.pos.numel()}")
        self.batch_rows = int(batch_rows)
        self.n_chunks = -(-n // self.batch_rows)

    def chunks(self, start: int = 0) -> Iterator[Chunk]:
        for c in range(start, self.n_chunks):
            s = slice(c * self.batch_rows, (c + 1) * self.batch_rows)
            yield Chunk(self.acts[s].float(), self.tokens[s], self.doc[s], self.pos[s])

    def describe(self) -> dict[str, Any]:
        return {"type": "tensor", "rows": self.acts.shape[0], "batch_rows": self.batch_rows,
                "digest": _digest(self.acts, self.tokens, self.doc, self.pos)}
