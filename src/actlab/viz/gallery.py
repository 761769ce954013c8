"""Plots of a run: image grids as PNG (PIL, nearest-neighbour upscaled) and one self-contained HTML gallery per run
folder (written atomically through ``actlab.artifact``)."""
from __future__ import annotations

import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from actlab.artifact import atomic_write_bytes, atomic_write_text

GALLERY = "index.html"
STYLE = ("<style>body{font-family:sans-serif;margin:2em} img{image-rendering:pixelated;border:1px solid #ccc}"
         " td,th{padding:2px 8px;text-align:right}</style>")


def to_uint8(images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """``[n, C, H, W]`` -> ``[n, H, W, C]`` uint8; ``normalize`` stretches each image to its own min..max, else
    values are clipped to [0, 1]."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [n, 1 or 3, H, W]; got {list(images.shape)}")
    x = images.detach().float().cpu()
    if normalize:
        lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
        hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def image_grid(images: torch.Tensor, nrow: int = 8, scale: int = 4, pad: int = 1, normalize: bool = False):
    """A PIL image: the images in rows of ``nrow``, each upscaled ``scale`` times, ``pad`` pixels apart."""
    from PIL import Image

    if len(images) == 0:
        raise ValueError("no images to draw")
    u = to_uint8(images, normalize)
    n, h, w, c = u.shape
    nrow = max(1, min(nrow, n))
    rows = (n + nrow - 1) // nrow
    hs, ws = h * scale, w * scale
    grid = torch.full((rows * (hs + pad) + pad, nrow * (ws + pad) + pad, c), 255, dtype=torch.uint8)
    big = u.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    for i in range(n):
        r, k = divmod(i, nrow)
        grid[pad + r * (hs + pad): pad + r * (hs + pad) + hs, pad + k * (ws + pad): pad + k * (ws + pad) + ws] = big[i]
    arr = grid.numpy()
    return Image.fromarray(arr[..., 0] if c == 1 else arr, mode="L" if c == 1 else "RGB")


def save_grid(path: str | os.PathLike, images: torch.Tensor, **kw) -> Path:
    """Write :func:`image_grid` as a PNG (atomically)."""
    buf = io.BytesIO()
    image_grid(images, **kw).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def write_gallery(folder: str | os.PathLike, title: str, sections: Sequence[tuple[str, str, str]],
                  table: Sequence[Sequence] | None = None) -> Path:
    """``<folder>/index.html``: a title, an optional table (first row = header), then one (heading, PNG file name
    in ``folder``, caption) section per image."""
    folder = Path(folder)
    for _, png, _ in sections:
        if not (folder / png).is_file():
            raise FileNotFoundError(f"gallery image {folder / png} does not exist")
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>", STYLE,
             f"<h1>{html.escape(title)}</h1>"]
    if table:
        head, *rows = table
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows]
        parts.append("</table>")
    for head, png, caption in sections:
        parts.append(f"<h2>{html.escape(head)}</h2><img src='{html.escape(png)}' alt='{html.escape(head)}'>"
                     f"<p>{html.escape(caption)}</p>")
    return atomic_write_text(folder / GALLERY, "\n".join(parts) + "\n")
