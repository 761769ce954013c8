"""The hook engine: the only place in actlab that touches torch hooks.

Hooks exist only inside context managers and are removed in ``finally``. Each handler sees a site's tensor in
its canonical view (``[batch, pos, ...]``; per-head sites as ``[batch, pos, head, d_head]``) and may return a
replacement. A root pre-hook tracks token positions so handlers know where they are, also during ``generate()``.
"""
from __future__ import annotations

import contextlib
import copy
from typing import TYPE_CHECKING, Callable, Iterator

import torch

from actlab.core.positions import PassInfo, call_shape, info_from_shape

if TYPE_CHECKING:
    from actlab.models.sites import SiteMap, SiteSpec


class StopForward(Exception):
    """Raised by a recording hook once every requested site is captured (early exit of the forward pass)."""


class Ctx:
    """What a handler knows about the call: the site name, the pass info (None for non-sequence inputs).

    ``info`` is computed on first read (from the engine's current call), so a handler that never reads positions
    costs no position bookkeeping."""

    __slots__ = ("site", "module", "_info", "_engine")

    def __init__(self, site: str, info: PassInfo | None, module: torch.nn.Module | None,
                 engine: HookEngine | None = None):
        self.site, self._info, self.module, self._engine = site, info, module, engine

    @property
    def info(self) -> PassInfo | None:
        return self._engine.info if self._engine is not None else self._info

    @property
    def sequence(self) -> bool:
        """True when the call's input is a token sequence (``info`` is not None), without computing positions."""
        if self._engine is not None:
            return self._engine._shape is not None
        return self._info is not None

    @property
    def step(self) -> int:
        if self._engine is not None:
            return self._engine.step
        return 0 if self._info is None else self._info.step

    def __repr__(self) -> str:
        return f"Ctx(site={self.site!r}, step={self.step})"


Handler = Callable[[torch.Tensor, Ctx], "torch.Tensor | None"]


def _split_part(spec: SiteSpec, t: torch.Tensor) -> torch.Tensor:
    """A view of part ``index`` of ``parts`` of a fused projection's last dim, per head ``[..., head, d_head]``:
    ``[p0 | p1 | ...]`` (GPT-2 ``c_attn``), or ``[head, parts, d_head]`` with ``split_inner`` (GPT-NeoX)."""
    index, parts = spec.split
    if spec.split_inner:
        return t.view(*t.shape[:-1], spec.heads, parts, -1)[..., index, :]
    t = t.view(*t.shape[:-1], parts, -1)[..., index, :]
    return t.view(*t.shape[:-1], spec.heads, -1)


class _Handles:
    """Several hook handles removed together."""

    def __init__(self, *handles):
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class _Release:
    """A handle whose ``remove`` releases a reference-counted switch."""

    def __init__(self, switch):
        self.switch = switch

    def remove(self) -> None:
        self.switch.release()


class _Chain:
    """The site handlers of one module, run by this object set as the module's ``forward`` while any is installed.

    Cheaper per call than torch hooks (nothing registered or removed but one instance attribute, and the module
    keeps torch's fast call path). ``pre`` entries ``f(module, args, kwargs) -> (args, kwargs) | None`` run before
    the forward, ``post`` entries ``f(module, args, output) -> output | None`` after it, each in installation order
    (an outer block's handlers first). Torch hooks on the same module run outside: pre-hooks before, forward hooks
    after. The engine keeps one chain per module."""

    __slots__ = ("module", "pre", "post", "inner", "saved", "attached")

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.pre: tuple = ()
        self.post: tuple = ()
        self.inner = self.saved = None
        self.attached = False

    def __call__(self, *args, **kwargs):
        module = self.module
        for f in self.pre:
            r = f(module, args, kwargs)
            if r is not None:
                args, kwargs = r
        out = self.inner(*args, **kwargs)
        for f in self.post:
            r = f(module, args, out)
            if r is not None:
                out = r
        return out

    @property
    def __wrapped__(self):   # inspect.signature (HF generate reads the forward's parameters) sees the real forward
        return self.inner

    def __deepcopy__(self, memo: dict) -> _Chain:
        """A copy bound to the copied module with no handlers (a model copied inside a block runs unhooked)."""
        new = _Chain(copy.deepcopy(self.module, memo))
        if self.attached:   # the copied module's forward is this copy: a pass-through until its engine adds to it
            new.saved = copy.deepcopy(self.saved, memo)
            new.inner = new.saved if new.saved is not None else type(new.module).forward.__get__(new.module)
            new.attached = True
        return new

    def add(self, kind: str, fn: Callable) -> _ChainHandle:
        if not self.attached:   # wrap whatever forward the module has now (its own, or an instance one: accelerate)
            d = self.module.__dict__
            self.saved = d.get("forward")
            self.inner = self.module.forward
            d["forward"] = self   # not Module.__setattr__: a plain attribute, set per call
            self.attached = True
        setattr(self, kind, (*getattr(self, kind), fn))
        return _ChainHandle(self, kind, fn)

    def remove(self, kind: str, fn: Callable) -> None:
        old = getattr(self, kind)
        setattr(self, kind, () if len(old) == 1 and old[0] is fn else tuple(f for f in old if f is not fn))
        d = self.module.__dict__
        if self.pre or self.post or d.get("forward") is not self:
            return   # still in use, or someone wrapped forward after us: stay in place as a pass-through
        if self.saved is None:
            del d["forward"]
        else:
            d["forward"] = self.saved
        self.inner = self.saved = None
        self.attached = False


class _ChainHandle:
    """Removes one entry of a module's chain."""

    __slots__ = ("chain", "kind", "fn")

    def __init__(self, chain: _Chain, kind: str, fn: Callable):
        self.chain, self.kind, self.fn = chain, kind, fn

    def remove(self) -> None:
        if self.fn is not None:
            self.chain.remove(self.kind, self.fn)
            self.fn = None


class HookEngine:
    """Installs handlers on sites of one model; tracks the positions of the current forward call."""

    def __init__(self, module: torch.nn.Module, sitemap: SiteMap):
        self.module = module
        self.sitemap = sitemap
        self._shape = None   # call_shape of the current root call (None: none, or not a token sequence)
        self._info: PassInfo | None = None
        self.step = 0
        self._calls = 0
        self._root_users = 0
        self._root_handle = None
        self._modules = dict(module.named_modules())
        self._chains: dict[str, _Chain] = {}   # module path -> its handler chain (made on first use, kept)
        self._pattern = None  # PatternSwitch, made on first use of an attention-pattern site

    # -- root tracking -------------------------------------------------------------------------------
    def _root_pre(self, mod, args, kwargs):
        self._shape = shape = call_shape(args, kwargs)
        self._info = None
        if shape is not None:
            self.step = self._calls if shape[4] else 0   # shape[4]: cached tokens (0: a prefill or plain pass)
        else:
            self.step = 0
        self._calls = (self.step if shape is not None else self._calls) + 1

    @property
    def info(self) -> PassInfo | None:
        """Positions of the current root call, computed on first read (None outside a call / for non-sequences)."""
        if self._info is None and self._shape is not None:
            self._info = info_from_shape(self._shape, self.step)
        return self._info

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        """Track positions of root forward calls; nested uses share one hook and one step counter."""
        self._track_enter()
        try:
            yield
        finally:
            self._track_exit()

    def _track_enter(self) -> None:
        if self._root_users == 0:
            self._calls = 0
            self._shape, self._info, self.step = None, None, 0
            self._root_handle = self.module.register_forward_pre_hook(self._root_pre, with_kwargs=True)
        self._root_users += 1

    def _track_exit(self) -> None:
        self._root_users -= 1
        if self._root_users == 0:
            self._root_handle.remove()
            self._root_handle = None
            self._shape, self._info, self.step = None, None, 0

    # -- site views --------------------------------------------------------------------------------------
    def _view(self, spec: SiteSpec, t: torch.Tensor) -> torch.Tensor:
        if spec.flat_tokens and self.info is not None and t.dim() == 2 and t.shape[0] == self.info.batch * self.info.seq:
            t = t.view(self.info.batch, self.info.seq, t.shape[-1])
        if spec.split is not None:
            t = _split_part(spec, t)
        elif spec.heads:
            t = t.view(*t.shape[:-1], spec.heads, t.shape[-1] // spec.heads)
        if spec.pattern:
            t = t.transpose(1, 2)  # [b, h, q, k] -> [b, q, h, k]: positions first
        return t

    @staticmethod
    def _unview(spec: SiteSpec, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        if spec.pattern and new.dim() == 4:
            new = new.transpose(1, 2)
        if spec.split is not None:  # write the part back into a copy of the whole fused output
            full = old.clone()
            part = _split_part(spec, full)
            part.copy_(new.reshape(part.shape))
            return full
        if new.shape != old.shape:   # a handler may grow the batch (rows appended: batched patch sweeps)
            grown = old.dim() > 1 and new.dim() > 1 and new.shape[0] != old.shape[0] and \
                new[0].numel() == old[0].numel()
            new = new.reshape((new.shape[0], *old.shape[1:]) if grown else old.shape)
        return new

    def _hook(self, path: str, kind: str, fn: Callable) -> _ChainHandle:
        """Put ``fn`` on the chain of the module at ``path`` (``kind`` 'pre' or 'post'), wrapping its forward."""
        chain = self._chains.get(path)
        if chain is None:
            chain = self._chains[path] = _Chain(self._modules[path])
        return chain.add(kind, fn)

    def add(self, site: str, handler: Handler) -> _ChainHandle | _Handles:
        """Register ``handler`` on a site; returns a handle (the caller removes it)."""
        spec = self.sitemap.resolve(site)
        mod = self._modules.get(spec.module)
        if mod is None:
            raise KeyError(f"site {site!r} points at module {spec.module!r}, which this model does not have")
        engine = self
        ctx = Ctx(site, None, mod, engine)   # one per installed handler: positions are read lazily from the engine
        plain = not (spec.flat_tokens or spec.split is not None or spec.heads or spec.pattern)   # no view to take

        if spec.io == "in":
            def pre(m, args, kwargs):
                if args:
                    raw, where = args[0], 0
                else:
                    key = "hidden_states" if "hidden_states" in kwargs else next(
                        k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
                    raw, where = kwargs[key], key
                view = raw if plain else engine._view(spec, raw)
                new = handler(view, ctx)
                if new is None or new is view:
                    if view is raw or not (torch.is_grad_enabled() and view.requires_grad):
                        return None
                    new = view  # keep the view in the graph so gradients reach it
                new = engine._unview(spec, new, raw)
                if where == 0:
                    return (new, *args[1:]), kwargs
                kwargs = dict(kwargs)
                kwargs[where] = new
                return args, kwargs

            return self._hook(spec.module, "pre", pre)

        base = {}  # plus_input_of: the other module's input, stashed by a pre-hook of this forward call
        if spec.plus_input_of is not None:
            def stash(m, args, kwargs):
                base["x"] = args[0] if args else kwargs["hidden_states"]

            stash_handle = self._hook(spec.plus_input_of, "pre", stash)

        def post(m, args, output):
            raw = output[0] if isinstance(output, tuple) else output
            if not isinstance(raw, torch.Tensor):
                raw = getattr(output, "last_hidden_state", None)
                if raw is None:
                    raise TypeError(f"site {site!r}: module output {type(output).__name__} holds no tensor")
            full = base["x"] + raw if base else raw  # the same sum the block computes next (bitwise)
            view = full if plain else engine._view(spec, full)
            new = handler(view, ctx)
            if new is None or new is view:
                if view is raw or not (torch.is_grad_enabled() and view.requires_grad):
                    return None
                new = view  # keep the view in the graph so gradients reach it
            new = engine._unview(spec, new, full)
            if base:
                new = new - base["x"]  # the block adds the residual back
            if isinstance(output, tuple):
                if spec.rebuild is not None:
                    return spec.rebuild(m, new, output)
                return (new, *output[1:])
            return new

        handle = self._hook(spec.module, "post", post)
        if spec.pattern:
            if self._pattern is None:  # the site map supplies the switch: the core knows no architecture
                self._pattern = self.sitemap.pattern_switch()
            self._pattern.acquire()
            return _Handles(handle, _Release(self._pattern))
        if spec.plus_input_of is None:
            return handle
        return _Handles(handle, stash_handle)

    @contextlib.contextmanager
    def module_hook(self, path: str, fn: Callable, kind: str = "forward", *, with_kwargs: bool = False) -> Iterator[None]:
        """A raw torch hook on the module at ``path`` ("" = the root) for the block: ``kind="forward"``
        (``fn(module, args, output) -> output | None``) or ``"pre"`` (``fn(module, args) -> args | None``); always
        removed. Positions are tracked meanwhile, as for site handlers."""
        mod = self._modules.get(path) if path else self.module
        if mod is None:
            import difflib
            close = difflib.get_close_matches(path, [n for n in self._modules if n], n=5)
            raise KeyError(f"module path {path!r} is not in this model; close matches: {close}")
        if kind == "forward":
            register = mod.register_forward_hook
        elif kind == "pre":
            register = mod.register_forward_pre_hook
        else:
            raise ValueError(f"module_hook kind must be 'forward' or 'pre', got {kind!r}")
        with self.tracking():
            handle = register(fn, with_kwargs=with_kwargs)
            try:
                yield
            finally:
                handle.remove()

    @contextlib.contextmanager
    def hooks(self, pairs: list[tuple[str, Handler]], track: bool = True) -> Iterator[None]:
        """Install (site, handler) pairs in order for the duration of the block; always removed. ``track=False``:
        the handlers never read positions or steps (no root pre-hook: cheaper calls)."""
        handles = self.install(pairs, track)
        try:
            yield
        finally:
            self.uninstall(handles, track)

    def install(self, pairs: list[tuple[str, Handler]], track: bool = True) -> list:
        """Install (site, handler) pairs in order; returns the handles for ``uninstall`` (which the caller must reach,
        in a ``finally``): ``hooks()`` without its generator frame, for one-call paths such as ``Model.record``."""
        handles: list = []
        if track:
            self._track_enter()
        try:
            for site, h in pairs:
                handles.append(self.add(site, h))
        except BaseException:
            self.uninstall(handles, track)
            raise
        return handles

    def uninstall(self, handles: list, track: bool = True) -> None:
        """Remove what ``install`` put in (every handle, then the position tracking)."""
        try:
            for h in handles:
                h.remove()
        finally:
            if track:
                self._track_exit()
