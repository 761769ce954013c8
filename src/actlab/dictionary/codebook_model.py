"""Codebook features inside a model: a ``CodebookLayer`` spliced at a site (``model.intervene``) and code forcing
during ``generate()`` (steering with a code)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from actlab.dictionary.codebook import CodebookLayer

if TYPE_CHECKING:
    from actlab.models import Model


def splice(layer: CodebookLayer, force: int | None = None, where: str = "all"):
    """An edit ``(act, ctx) -> act`` snapping the site's activation to its codes; with ``force`` the code is put
    among the selected ones (replacing the lowest-ranked) at every position (``where="all"``) or only at the last
    position of each forward call (``"last"``: the prompt's last token, then each new token in ``generate()``)."""
    if where not in ("all", "last"):
        raise ValueError(f"where={where!r}; use 'all' or 'last'")
    if force is not None and not 0 <= force < layer.codes.shape[0]:
        raise IndexError(f"code {force} out of range: the codebook has {layer.codes.shape[0]} codes")

    def edit(act, ctx):
        x = act.to(layer.codes.dtype)
        old, layer.forced = layer.forced, None
        try:
            plain = layer(x)
            if force is None:
                return plain.to(act.dtype)
            layer.forced = force
            forced = layer(x)
        finally:
            layer.forced = old
        if where == "last":
            forced = torch.cat([plain[:, :-1], forced[:, -1:]], 1)
        return forced.to(act.dtype)
    return edit


@contextlib.contextmanager
def forcing(model: Model, site: str, layer: CodebookLayer, code: int, where: str = "last") -> Iterator[None]:
    """Generate (or run) with the codebook spliced at ``site`` and ``code`` forced (see :func:`splice`)."""
    with model.intervene({site: splice(layer, code, where)}):
        yield
