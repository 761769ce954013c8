"""``Model``: a torch module + tokenizer + site map, with record / intervene / generate over one hook engine."""
from __future__ import annotations

import contextlib
import inspect
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import torch

from actlab.core.hooks import Handler, HookEngine, StopForward
from actlab.core.interventions import Schedule, bind, check_grad_mode
from actlab.core.positions import Positions, position_ids_from_mask, selects_all
from actlab.core.recording import Recording, take_positions
from actlab.core.serialize import normalize_mapping
from actlab.models.sites import SiteMap
from actlab.utils import parse_dtype

if TYPE_CHECKING:
    from actlab.models.adapter import Adapter

__all__ = ["Model", "Recording", "take_positions"]

Inputs = Union[str, Sequence[str], Mapping[str, Any], torch.Tensor, tuple]
"""What ``record``/``__call__`` take: text, texts, a tokenized dict, a token-id tensor, or positional tensors."""


class Model:
    """A model with named sites. ``module`` is the underlying ``torch.nn.Module`` (an HF model or anything else).

    Parameters are frozen (``requires_grad=False``) and the module is in eval mode; call
    ``model.module.requires_grad_(True)`` for methods that need weight gradients.
    """

    def __init__(self, module: torch.nn.Module, tokenizer: Any = None, name: str = "model", revision: str = "") -> None:
        self.module = module
        self.tokenizer = tokenizer
        self.name = name
        self.revision = revision
        self.sitemap = SiteMap(module)
        self._engine = HookEngine(module, self.sitemap)
        self._takes_position_ids: bool | None = None
        self._first_param: tuple[torch.nn.Module, torch.nn.Parameter | None] | None = None
        self._mask_seen: tuple[weakref.ref, int, bool] | None = None

    # -- facts -----------------------------------------------------------------------------------------
    @property
    def sites(self) -> list[str]:
        """Canonical site names in forward order (raw ``module:<path>`` names are accepted too)."""
        return self.sitemap.names

    @property
    def adapter(self) -> Adapter:
        """The architecture adapter (``actlab.models.Adapter``): module paths, head geometry, weight views."""
        return self.sitemap.adapter

    @property
    def family(self) -> str:
        """The adapter's name: gpt2, llama, bert, mixtral, gpt_neox or generic."""
        return self.adapter.name

    @property
    def config(self) -> Any:
        return getattr(self.module, "config", None)

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    @property
    def d_model(self) -> int | None:
        return self.adapter.d_model

    def _param0(self) -> torch.nn.Parameter | None:
        """The module's first parameter, looked up once per module (``.to()`` moves it in place, so its device and
        dtype stay current); walking the parameters on every call cost ~40 us per input tensor."""
        cached = self._first_param
        if cached is None or cached[0] is not self.module:
            cached = self._first_param = (self.module, next(self.module.parameters(), None))
        return cached[1]

    def _unpadded(self, mask: torch.Tensor) -> bool:
        """Whether an attention mask is all ones, remembered for the last mask seen: the same tensor object at the
        same version (every in-place edit bumps it) is not reduced again; sweeps call with one mask many times."""
        seen = self._mask_seen
        if seen is not None and seen[0]() is mask and seen[1] == mask._version:
            return seen[2]
        full = bool(mask.all())
        self._mask_seen = (weakref.ref(mask), mask._version, full)
        return full

    @property
    def device(self) -> torch.device:
        p = self._param0()
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = self._param0()
        return p.dtype if p is not None else torch.float32

    @property
    def is_causal_lm(self) -> bool:
        return hasattr(self.module, "generate") and "logits" in self.sitemap.names

    @property
    def context_length(self) -> int | None:
        """The most tokens the model takes in one sequence (learned or trained positions), None if unknown."""
        cfg = self.config
        cached = getattr(self, "_context_cache", None)
        if cached is not None and cached[0] is cfg:   # HF config attribute reads are slow (~100 us per call)
            return cached[1]
        self._context_cache = (cfg, self._context_from(cfg))
        return self._context_cache[1]

    @staticmethod
    def _context_from(cfg: Any) -> int | None:
        for key in ("n_positions", "max_position_embeddings"):
            n = getattr(cfg, key, None)
            if isinstance(n, int) and n > 0:
                return n
        return None

    def module_paths(self) -> list[str]:
        return [n for n, _ in self.module.named_modules() if n]

    def check_sites(self, sites: str | Iterable[str]) -> list[str]:
        """Resolve every name (raises a KeyError listing close matches for an unknown one)."""
        sites = [sites] if isinstance(sites, str) else list(sites)
        for s in sites:
            self.sitemap.resolve(s)
        return sites

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, family={self.family}, layers={self.n_layers}, d_model={self.d_model}, "
                f"sites={len(self.sites)}, dtype={self.dtype}, device={self.device})")

    # -- inputs ----------------------------------------------------------------------------------------
    def tokenize(self, texts: str | Sequence[str], *, chat: bool = False, padding_side: str | None = None,
                 add_special_tokens: bool = True, max_length: int | None = None,
                 truncation_side: str | None = None) -> dict[str, torch.Tensor]:
        """Tokenize one or more texts into a padded batch (left padding for causal LMs) on the model's device.

        ``max_length`` truncates each text (its end, or its start with ``truncation_side="left"``).
        """
        if self.tokenizer is None:
            raise ValueError(f"{self.name} has no tokenizer; pass tensors instead of text")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no texts to tokenize: got an empty list")
        if chat:
            texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                        add_generation_prompt=True) for t in texts]
            add_special_tokens = False
        tok = self.tokenizer
        side = padding_side or ("left" if self.is_causal_lm else "right")
        old, tok.padding_side = tok.padding_side, side
        old_trunc = tok.truncation_side
        tok.truncation_side = truncation_side or old_trunc
        try:
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens,
                      truncation=max_length is not None, max_length=max_length)
        finally:
            tok.padding_side = old
            tok.truncation_side = old_trunc
        return {k: v.to(self.device) for k, v in enc.items()}

    def _tokenize_fitting(self, texts: str | Sequence[str], truncate: bool, room: int = 0,
                          **kw: Any) -> dict[str, torch.Tensor]:
        """Tokenize; with ``truncate`` cut texts longer than the context (minus ``room``) with a warning."""
        enc = self.tokenize(texts, **kw)
        n, ctx = enc["input_ids"].shape[1], self.context_length
        if truncate and ctx is not None and n + room > ctx:
            if ctx - room < 1:
                raise ValueError(f"no room for the prompt: {room} new tokens fill the model's context of {ctx}")
            side = kw.pop("truncation_side", None) or ("left" if room else "right")
            warnings.warn(f"input of {n} tokens exceeds the model's context of {ctx}"
                          f"{f' less {room} new tokens' if room else ''}: truncated to {ctx - room} tokens "
                          f"(kept the {'end' if side == 'left' else 'start'})", stacklevel=3)
            enc = self.tokenize(texts, max_length=ctx - room, truncation_side=side, **kw)
        return enc

    def check_input(self, enc: Mapping[str, Any], new_tokens: int = 0) -> None:
        """Refuse an empty prompt or one longer than the model's context (``new_tokens`` still to come)."""
        self._checked(dict(enc), new_tokens, positions=False)

    def _checked(self, kw: dict[str, Any], new_tokens: int = 0, positions: bool = True) -> dict[str, Any]:
        """``check_input`` and, with ``positions``, ``forward_kwargs`` in one pass over ``kw`` (edited in place):
        each shape is read once and an all-ones mask is reduced once (per-call work on tiny forwards)."""
        x = kw.get("input_ids")
        if x is None:
            x = kw.get("inputs_embeds")
        if not isinstance(x, torch.Tensor):
            return kw
        xs = x.shape
        if len(xs) < 2:
            return kw
        if xs[0] == 0 or xs[1] == 0:
            raise ValueError(f"empty input (shape {list(xs)}): give at least one token per prompt")
        mask = kw.get("attention_mask")
        ms = mask.shape if isinstance(mask, torch.Tensor) else None
        if ms is not None and len(ms) != 2:
            ms = None
        unpadded = ms is None or self._unpadded(mask)
        if not unpadded:
            empty = (mask.sum(1) == 0).nonzero().flatten().tolist()
            if empty:
                raise ValueError(f"prompt {empty[0]} of the batch is empty (no tokens): give at least one token")
        ctx = self.context_length
        n = xs[1] if ms is None else ms[1]
        if ctx is not None and n + new_tokens > ctx:
            extra = f" plus {new_tokens} new tokens" if new_tokens else ""
            raise ValueError(f"input of {n} tokens{extra} exceeds the model's context of {ctx} ({self.name}); "
                             f"pass shorter text, truncate=True, or tokenize with max_length=")
        if positions and not unpadded:   # no padding: the module's default ids
            self._add_position_ids(kw, xs, mask, ms)
        return kw

    def _add_position_ids(self, kw: dict[str, Any], xs: torch.Size, mask: Any, ms: torch.Size | None) -> None:
        """Put position ids that follow a padded 2-D ``mask`` (shape ``ms``, None if it is not one) into ``kw``,
        where the module takes them, none were given and the mask covers the ``xs``-shaped input's tokens."""
        if ms is not None and ms[0] == xs[0] and ms[1] >= xs[1] and kw.get("position_ids") is None \
                and self._accepts_position_ids() and not self._unpadded(mask):
            kw["position_ids"] = position_ids_from_mask(mask, xs[1])

    def _accepts_position_ids(self) -> bool:
        if self._takes_position_ids is None:
            try:
                params = inspect.signature(self.module.forward).parameters
            except (TypeError, ValueError):
                params = {}
            self._takes_position_ids = "position_ids" in params
        return self._takes_position_ids

    def forward_kwargs(self, enc: Mapping[str, Any]) -> dict[str, Any]:
        """``enc`` plus ``position_ids`` that follow its attention mask (``cumsum(mask) - 1``, clamped at 0) where
        the module takes them and none were given: a row's numbers then never depend on its left padding.
        For families that call ``model.module`` themselves; ``record``/``__call__``/``run_with_cache`` do it."""
        kw = dict(enc)
        x = kw.get("input_ids")
        if x is None:
            x = kw.get("inputs_embeds")
        mask = kw.get("attention_mask")
        if isinstance(x, torch.Tensor) and x.dim() >= 2:
            self._add_position_ids(kw, x.shape, mask,
                                   mask.shape if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None)
        return kw

    def _inputs(self, inputs: Inputs, truncate: bool = False) -> tuple[tuple, dict[str, Any]]:
        if isinstance(inputs, (str, list)) and (isinstance(inputs, str) or all(isinstance(x, str) for x in inputs)):
            if isinstance(inputs, list) and not inputs:
                raise ValueError("no inputs: got an empty list of texts")
            return (), self._tokenize_fitting(inputs, truncate)
        if isinstance(inputs, dict) or hasattr(inputs, "keys"):
            dev = self.device   # no .to() call for a tensor already there (one dispatch per input, per call)
            return (), {k: (v.to(dev) if isinstance(v, torch.Tensor) and v.device != dev else v)
                        for k, v in dict(inputs).items()}
        if isinstance(inputs, torch.Tensor):
            x = inputs.to(self.device)
            if not x.is_floating_point() and self.config is not None:
                return (), {"input_ids": x if x.dim() == 2 else x[None]}
            return (x,), {}
        if isinstance(inputs, tuple):
            dev = self.device
            return tuple(t.to(dev) if isinstance(t, torch.Tensor) else t for t in inputs), {}
        raise TypeError(f"inputs must be text, a list of texts, a dict of tensors or a tensor; got {type(inputs).__name__}")

    def _prepare(self, inputs: Inputs, extra: Mapping[str, Any] | None = None,
                 truncate: bool = False) -> tuple[tuple, dict[str, Any]]:
        """(args, kwargs) for ``self.module``: inputs checked (empty, context) and position ids from the mask."""
        args, kw = self._inputs(inputs, truncate)
        if extra:
            kw.update(extra)
        return args, self._checked(kw)

    def __call__(self, inputs: Inputs, *, truncate: bool = False, **kwargs: Any) -> Any:
        """The module's forward on ``inputs`` (position ids follow the attention mask)."""
        args, kw = self._prepare(inputs, kwargs, truncate)
        return self.module(*args, **kw)

    forward = __call__

    # -- raw hooks -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def hooks(self, mapping: Mapping[str, Handler | Sequence[Handler]] | Iterable[tuple[str, Handler]]
              ) -> Iterator[Model]:
        """Raw site handlers ``(act, ctx) -> act | None`` for the block: ``{site: handler | [handlers]}`` or
        ``[(site, handler), ...]``, installed in order, always removed. ``act`` is the site's canonical view;
        returning a tensor replaces it. For what ``recording``/``intervene`` do not cover."""
        items = mapping.items() if isinstance(mapping, Mapping) else mapping
        pairs: list[tuple[str, Handler]] = []
        for site, hs in items:
            for h in hs if isinstance(hs, (list, tuple)) else [hs]:
                if not callable(h):
                    raise TypeError(f"handler for site {site!r} must be callable (act, ctx) -> act | None; "
                                    f"got {type(h).__name__}")
                pairs.append((site, h))
        self.check_sites([s for s, _ in pairs])
        with self._engine.hooks(pairs):
            yield self

    def module_hook(self, path: str, fn: Callable, kind: str = "forward", *,
                    with_kwargs: bool = False) -> contextlib.AbstractContextManager[None]:
        """A raw torch hook on any module path, as a context manager: ``kind="forward"`` calls
        ``fn(module, args, output)`` (return a new output or None), ``kind="pre"`` calls ``fn(module, args)``."""
        return self._engine.module_hook(path, fn, kind, with_kwargs=with_kwargs)

    # -- record ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def recording(self, sites: str | Iterable[str], *, positions: Positions = "all",
                  dtype: str | torch.dtype | None = None, device: str | torch.device | None = None,
                  detach: bool | None = None, stop_early: bool = False, grad: bool = False) -> Iterator[Recording]:
        """Capture sites during any forward calls in the block (``generate()`` included): yields a Recording.

        ``grad=True`` keeps each activation in the autograd graph (gradients enabled in the block); after
        ``loss.backward()``, ``rec.grad(site)`` is its gradient. Nested with ``intervene``, the outer block's
        hooks run first: a recording opened outside sees the activation before the intervention.
        """
        sites = self.check_sites(sites)
        rec, pairs = self._recorder(sites, positions, dtype, device, detach, stop_early, grad)
        with torch.enable_grad() if grad else contextlib.nullcontext(), \
                self._engine.hooks(pairs, self._reads_positions(sites, positions)):
            yield rec

    def _reads_positions(self, sites: list[str], positions: Positions) -> bool:
        """Whether recording ``sites`` needs each call's token positions (a selector other than 'all', or a site
        the engine views as ``[batch, pos, ...]`` from flat tokens); without, no root pre-hook is installed."""
        return not selects_all(positions) or any(self.sitemap.resolve(s).flat_tokens for s in sites)

    @staticmethod
    def _recorder(sites: list[str], positions: Positions, dtype: str | torch.dtype | None,
                  device: str | torch.device | None, detach: bool | None, stop_early: bool,
                  grad: bool) -> tuple[Recording, list[tuple[str, Handler]]]:
        """A Recording and the (site, handler) pairs that fill it."""
        rec = Recording(sites, grad=grad)
        dtype = parse_dtype(dtype)
        keep_graph = grad or detach is False

        if dtype is None and device is None and not keep_graph:   # the common case: one test per call
            def convert(t: torch.Tensor) -> torch.Tensor:
                return t.detach() if t.requires_grad else t   # a tensor outside the graph is kept as is
        else:
            def convert(t: torch.Tensor) -> torch.Tensor:
                if not keep_graph and t.requires_grad:
                    t = t.detach()
                return t.to(device=device, dtype=dtype) if dtype is not None or device is not None else t

        pending = set(sites) if stop_early else None
        return rec, [(s, rec.handler(s, positions, convert, pending)) for s in sites]

    def record(self, inputs: Inputs, sites: str | Iterable[str], *, positions: Positions = "all",
               dtype: str | torch.dtype | None = None, device: str | torch.device | None = None,
               stop_early: bool = True, grad: bool = False, truncate: bool = False,
               **forward_kwargs: Any) -> dict[str, torch.Tensor]:
        """One forward pass; returns ``{site: tensor}``: ``[batch, pos, ...]`` for positions 'all' (padding
        included), ``[batch, ...]`` for 'last' or an int, ``[n, ...]`` (the selected real tokens, row by row) for a
        slice, a list or a mask. ``grad=True`` leaves the tensors in the autograd graph.

        The pass stops as soon as every requested site is captured (``stop_early``), so recording an early layer
        costs only the layers up to it. Input longer than the model's context raises, or with ``truncate=True``
        (text input) is cut with a warning.
        """
        sites = self.check_sites(sites)
        args, kw = self._prepare(inputs, forward_kwargs, truncate)
        kw.setdefault("use_cache", False) if self.config is not None else None
        rec, pairs = self._recorder(sites, positions, dtype, device, not grad, stop_early, False)
        track = self._reads_positions(sites, positions)
        engine = self._engine
        with torch.set_grad_enabled(grad):
            handles = engine.install(pairs, track)   # no context-manager frames on this per-call path
            try:
                self.module(*args, **kw)
            except StopForward:
                pass
            finally:
                engine.uninstall(handles, track)
        return rec.to_dict()

    def run_with_cache(self, inputs: Inputs, sites: str | Iterable[str], *, truncate: bool = False,
                       **kw: Any) -> tuple[Any, dict[str, torch.Tensor]]:
        """TransformerLens-style: (model output, {site: tensor}) from one full forward pass."""
        sites = self.check_sites(sites)
        args, kwargs = self._prepare(inputs, None, truncate)
        with torch.no_grad(), self.recording(sites, **kw) as rec:
            out = self.module(*args, **kwargs)
        return out, rec.to_dict()

    # -- intervene -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def intervene(self, mapping: Mapping[str, Any] | Iterable[tuple[str, Any]], *, grad: str = "through",
                  schedule: Schedule | None = None) -> Iterator[Model]:
        """Apply ``{site: intervention | [interventions]}`` (or ``[(site, iv), ...]``) to every forward call in the
        block, ``generate()`` and training steps included; nested blocks compose (outer first). Hooks are removed
        even on error.

        ``grad="through"`` (default): gradients flow through the edited activation as autograd defines it (an
        identity edit leaves losses and gradients bit-identical). ``grad="block"``: the edit sees the activation
        detached, so nothing upstream of the site gets gradient through it (a clamp is a constant).
        ``schedule``: a ``Schedule`` the training loop advances; the edits apply only while it is active.
        ``FromSite`` interventions get their source site captured earlier in the same pass.
        """
        check_grad_mode(grad)
        pairs = normalize_mapping(mapping)
        sources = [(src, iv.capture) for _, iv in pairs for src in iv.source_sites()]
        self.check_sites([s for s, _ in pairs] + [s for s, _ in sources])
        handlers = sources + [(site, bind(iv, grad, schedule)) for site, iv in pairs]
        with self._engine.hooks(handlers):
            yield self

    # -- generate --------------------------------------------------------------------------------------
    def generate(self, prompts: str | Sequence[str] | torch.Tensor, max_new_tokens: int = 32, *,
                 do_sample: bool = False, chat: bool = False, return_ids: bool = False, truncate: bool = False,
                 **kwargs: Any) -> str | list[str] | torch.Tensor:
        """Generate continuations of one prompt (returns str) or a list (returns list[str]); greedy by default.

        Left-padded batches (HF's generate derives position ids from the attention mask at prefill and every step);
        interventions active in an ``intervene`` block apply at prefill and every decode step. A prompt that with
        ``max_new_tokens`` exceeds the context raises, or with ``truncate=True`` keeps its end, with a warning.
        """
        if not self.is_causal_lm:
            raise ValueError(f"{self.name} ({self.family}) is not a causal LM; generate() needs one")
        single = isinstance(prompts, str)
        if isinstance(prompts, torch.Tensor):
            ids = (prompts if prompts.dim() == 2 else prompts[None]).to(self.device)
            enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        else:
            if not single and not list(prompts):
                raise ValueError("no prompts: got an empty list")
            enc = self._tokenize_fitting(prompts, truncate, room=max_new_tokens or 0, chat=chat)
        self.check_input(enc, new_tokens=max_new_tokens or 0)
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

    def to(self, *args: Any, **kwargs: Any) -> Model:
        self.module.to(*args, **kwargs)
        return self
