"""``Model``: a torch module + tokenizer + site map, with record / intervene / generate over one hook engine."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from actlab.core.hooks import Ctx, HookEngine, StopForward
from actlab.core.positions import Positions, select_mask
from actlab.core.serialize import normalize_mapping
from actlab.models.sites import SiteMap
from actlab.utils import parse_dtype


class Recording:
    """Activations captured inside ``model.recording(...)``: one tensor per forward call per site.

    ``rec[site]`` concatenates the calls along positions (prefill then each decode step of ``generate()``);
    ``rec.steps[site]`` keeps them separate.
    """

    def __init__(self, sites: list[str]):
        self.steps: dict[str, list[torch.Tensor]] = {s: [] for s in sites}

    def __getitem__(self, site: str) -> torch.Tensor:
        steps = self.steps[site]
        if not steps:
            raise KeyError(f"site {site!r} was not reached by the forward pass")
        if len(steps) == 1:
            return steps[0]
        if len({(t.dim(), t.shape[0], *t.shape[2:]) for t in steps}) > 1:
            raise ValueError(f"site {site!r} has another shape in each forward call ({[list(t.shape) for t in steps]};"
                             f" attention patterns grow with the KV cache): use rec.steps[{site!r}]")
        return torch.cat(steps, dim=1)

    def __contains__(self, site: str) -> bool:
        return bool(self.steps.get(site))

    def keys(self):
        return self.steps.keys()

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {s: self[s] for s in self.steps if self.steps[s]}


def take_positions(t: torch.Tensor, sel: Positions, info) -> torch.Tensor:
    """Select positions of a ``[batch, pos, ...]`` tensor: 'all' keeps it, 'last'/int give ``[batch, ...]``,
    other selectors give the selected rows flattened ``[n, ...]`` (row-major)."""
    mask = select_mask(sel, info, "positions")
    if mask is None:
        return t
    if isinstance(sel, (str, int)):
        if not bool((mask.sum(1) == 1).all()):
            raise ValueError(f"positions={sel!r} is out of range for some rows (lengths {info.length_b.tolist()})")
        return t[mask]
    return t[mask]


class Model:
    """A model with named sites. ``module`` is the underlying ``torch.nn.Module`` (an HF model or anything else).

    Parameters are frozen (``requires_grad=False``) and the module is in eval mode; call
    ``model.module.requires_grad_(True)`` for methods that need weight gradients.
    """

    def __init__(self, module: torch.nn.Module, tokenizer=None, name: str = "model", revision: str = ""):
        self.module = module
        self.tokenizer = tokenizer
        self.name = name
        self.revision = revision
        self.sitemap = SiteMap(module)
        self.engine = HookEngine(module, self.sitemap)

    # -- facts -----------------------------------------------------------------------------------------
    @property
    def sites(self) -> list[str]:
        """Canonical site names in forward order (raw ``module:<path>`` names are accepted too)."""
        return self.sitemap.names

    @property
    def family(self) -> str:
        return self.sitemap.family.name if self.sitemap.family else "generic"

    @property
    def config(self):
        return getattr(self.module, "config", None)

    @property
    def n_layers(self) -> int:
        return self.sitemap.n_layers

    @property
    def d_model(self) -> int | None:
        cfg = self.config
        return getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None)

    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.module.parameters(), None)
        return p.dtype if p is not None else torch.float32

    @property
    def is_causal_lm(self) -> bool:
        return hasattr(self.module, "generate") and "logits" in self.sitemap.names

    def module_paths(self) -> list[str]:
        return [n for n, _ in self.module.named_modules() if n]

    def check_sites(self, sites) -> list[str]:
        """Resolve every name (raises a KeyError listing close matches for an unknown one)."""
        sites = [sites] if isinstance(sites, str) else list(sites)
        for s in sites:
            self.sitemap.resolve(s)
        return sites

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, family={self.family}, layers={self.n_layers}, d_model={self.d_model}, "
                f"sites={len(self.sites)}, dtype={self.dtype}, device={self.device})")

    # -- inputs ----------------------------------------------------------------------------------------
    def tokenize(self, texts, *, chat: bool = False, padding_side: str | None = None, add_special_tokens=True,
                 max_length: int | None = None) -> dict:
        """Tokenize one or more texts into a padded batch (left padding for causal LMs) on the model's device."""
        if self.tokenizer is None:
            raise ValueError(f"{self.name} has no tokenizer; pass tensors instead of text")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if chat:
            texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                        add_generation_prompt=True) for t in texts]
            add_special_tokens = False
        tok = self.tokenizer
        side = padding_side or ("left" if self.is_causal_lm else "right")
        old, tok.padding_side = tok.padding_side, side
        try:
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens,
                      truncation=max_length is not None, max_length=max_length)
        finally:
            tok.padding_side = old
        return {k: v.to(self.device) for k, v in enc.items()}

    def _inputs(self, inputs) -> tuple[tuple, dict]:
        if isinstance(inputs, (str, list)) and (isinstance(inputs, str) or all(isinstance(x, str) for x in inputs)):
            return (), self.tokenize(inputs)
        if isinstance(inputs, dict) or hasattr(inputs, "keys"):
            return (), {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in dict(inputs).items()}
        if isinstance(inputs, torch.Tensor):
            x = inputs.to(self.device)
            if not x.is_floating_point() and self.config is not None:
                return (), {"input_ids": x if x.dim() == 2 else x[None]}
            return (x,), {}
        if isinstance(inputs, tuple):
            return tuple(t.to(self.device) if isinstance(t, torch.Tensor) else t for t in inputs), {}
        raise TypeError(f"inputs must be text, a list of texts, a dict of tensors or a tensor; got {type(inputs).__name__}")

    def __call__(self, inputs, **kwargs):
        args, kw = self._inputs(inputs)
        return self.module(*args, **kw, **kwargs)

    forward = __call__

    # -- record ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def recording(self, sites, *, positions: Positions = "all", dtype=None, device=None, detach: bool = True,
                  stop_early: bool = False) -> Iterator[Recording]:
        """Capture sites during any forward calls in the block (``generate()`` included): yields a Recording."""
        sites = self.check_sites(sites)
        rec = Recording(sites)
        dtype = parse_dtype(dtype)
        pending = set(sites)

        def make(site):
            def handler(act: torch.Tensor, ctx: Ctx):
                t = take_positions(act, positions, ctx.info)
                if detach:
                    t = t.detach()
                if dtype is not None or device is not None:
                    t = t.to(device=device, dtype=dtype)
                rec.steps[site].append(t)
                if stop_early:
                    pending.discard(site)
                    if not pending:
                        raise StopForward
                return None
            return handler

        with self.engine.hooks([(s, make(s)) for s in sites]):
            yield rec

    def record(self, inputs, sites, *, positions: Positions = "all", dtype=None, device=None,
               stop_early: bool = True, grad: bool = False, **forward_kwargs) -> dict[str, torch.Tensor]:
        """One forward pass; returns ``{site: tensor}`` (``[batch, pos, ...]`` for 'all').

        The pass stops as soon as every requested site is captured (``stop_early``), so recording an early layer
        costs only the layers up to it.
        """
        sites = self.check_sites(sites)
        args, kw = self._inputs(inputs)
        kw.update(forward_kwargs)
        kw.setdefault("use_cache", False) if self.config is not None else None
        with torch.set_grad_enabled(grad), self.recording(sites, positions=positions, dtype=dtype, device=device,
                                                          detach=not grad, stop_early=stop_early) as rec:
            try:
                self.module(*args, **kw)
            except StopForward:
                pass
        return rec.to_dict()

    def run_with_cache(self, inputs, sites, **kw):
        """TransformerLens-style: (model output, {site: tensor}) from one full forward pass."""
        sites = self.check_sites(sites)
        args, kwargs = self._inputs(inputs)
        with torch.no_grad(), self.recording(sites, **kw) as rec:
            out = self.module(*args, **kwargs)
        return out, rec.to_dict()

    # -- intervene -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def intervene(self, mapping) -> Iterator["Model"]:
        """Apply ``{site: intervention | [interventions]}`` (or ``[(site, iv), ...]``) to every forward call in the
        block, ``generate()`` included; nested blocks compose (outer first). Hooks are removed even on error."""
        pairs = normalize_mapping(mapping)
        self.check_sites([s for s, _ in pairs])
        with self.engine.hooks(pairs):
            yield self

    # -- generate --------------------------------------------------------------------------------------
    def generate(self, prompts, max_new_tokens: int = 32, *, do_sample: bool = False, chat: bool = False,
                 return_ids: bool = False, **kwargs):
        """Generate continuations of one prompt (returns str) or a list (returns list[str]); greedy by default.

        Left-padded batches; interventions active in an ``intervene`` block apply at prefill and every decode step.
        """
        if not self.is_causal_lm:
            raise ValueError(f"{self.name} ({self.family}) is not a causal LM; generate() needs one")
        single = isinstance(prompts, str)
        if isinstance(prompts, torch.Tensor):
            enc = {"input_ids": prompts.to(self.device), "attention_mask": torch.ones_like(prompts).to(self.device)}
        else:
            enc = self.tokenize(prompts, chat=chat)
        pad = self.tokenizer.pad_token_id if self.tokenizer is not None else None
        kwargs.setdefault("pad_token_id", pad if pad is not None else self.tokenizer.eos_token_id)
        if not do_sample:
            kwargs.setdefault("temperature", None)
            kwargs.setdefault("top_p", None)
            kwargs.setdefault("top_k", None)
        with torch.no_grad():
            out = self.module.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        if return_ids:
            return out
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return texts[0] if single else texts

    def to(self, *args, **kwargs) -> "Model":
        self.module.to(*args, **kwargs)
        return self
