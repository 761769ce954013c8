"""Shared pieces of the patching family: prompt pairs, metrics, the labelled result tensor and its heat map.

Patching compares a *clean* run with a *corrupted* one; every method here reads the same ``PromptPairs``
(aligned token ids) and ``Metric`` (a scalar per row from the last-position logits) and returns a ``PatchResult``.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from actlab.artifact import ArtifactError, atomic_write_bytes, folder_lock, load_artifact, save_artifact

if TYPE_CHECKING:
    from actlab.models import Model

KIND = "patch.result"
RESULT_TENSORS = "result.safetensors"
RESULT_JSON = "result.json"
FORMAT_VERSION = 1


# -- prompt pairs ---------------------------------------------------------------------------------------
@dataclass
class PromptPairs:
    """Clean and corrupted token ids, padded to one width so column ``j`` is the same position in both.

    ``clean_ids``/``corrupt_ids``: [n_pairs, width]; masks: 1 = real token. Left padding (causal LMs), so the
    last column is every row's last token. ``tokens``: decoded tokens of pair 0 (for labels).
    """

    clean_ids: torch.Tensor
    corrupt_ids: torch.Tensor
    clean_mask: torch.Tensor
    corrupt_mask: torch.Tensor
    tokens: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.clean_ids.shape[0]

    @property
    def width(self) -> int:
        return self.clean_ids.shape[1]

    def inputs(self, which: str, rows: torch.Tensor | None = None) -> dict:
        ids, mask = (self.clean_ids, self.clean_mask) if which == "clean" else (self.corrupt_ids, self.corrupt_mask)
        if rows is not None:
            ids, mask = ids[rows], mask[rows]
        return {"input_ids": ids, "attention_mask": mask}

    def position_labels(self) -> list[str]:
        return [f"{j}:{t}" for j, t in enumerate(self.tokens)] if self.tokens else [str(j) for j in range(self.width)]


def _left_pad(rows: list[list[int]], width: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.as_tensor(r)
            mask[i, width - len(r):] = 1
    return ids, mask


def make_pairs(m: Model, clean, corrupt, *, align: str = "strict") -> PromptPairs:
    """Tokenize clean/corrupted prompts (texts or id lists/tensors) into aligned ``PromptPairs``.

    ``align='strict'`` (default) requires each pair to have the same token count and raises otherwise;
    ``align='right'`` is the explicit alternative: the shorter prompt is left-padded so the *last* tokens line up
    (position ``j`` then means "the same distance from the end" in both prompts).
    """
    if align not in ("strict", "right"):
        raise ValueError(f"align must be 'strict' or 'right', got {align!r}")

    def to_rows(x) -> list[list[int]]:
        if isinstance(x, str):
            x = [x]
        if isinstance(x, torch.Tensor):
            x = x[None] if x.dim() == 1 else x
            return [r.tolist() for r in x]
        if len(x) and isinstance(x[0], str):
            if m.tokenizer is None:
                raise ValueError(f"{m.name} has no tokenizer; pass token ids instead of text")
            return [m.tokenizer(t)["input_ids"] for t in x]
        return [list(map(int, r)) for r in x]

    c, k = to_rows(clean), to_rows(corrupt)
    if len(c) != len(k):
        raise ValueError(f"got {len(c)} clean and {len(k)} corrupted prompts; patching needs one corrupted prompt per "
                         f"clean prompt")
    if not c:
        raise ValueError("no prompt pairs given")
    for i, (a, b) in enumerate(zip(c, k)):
        if len(a) != len(b) and align == "strict":
            raise ValueError(f"pair {i}: the clean prompt tokenizes to {len(a)} tokens and the corrupted one to "
                             f"{len(b)}; patching needs aligned positions: use prompts of equal token length or "
                             f"align='right' (line up the final tokens)")
    width = max(max(map(len, c)), max(map(len, k)))
    pad = 0
    if m.tokenizer is not None and m.tokenizer.pad_token_id is not None:
        pad = m.tokenizer.pad_token_id
    ci, cm = _left_pad(c, width, pad)
    ki, km = _left_pad(k, width, pad)
    toks = []
    if m.tokenizer is not None:
        toks = [m.tokenizer.decode([t]) if mk else "<pad>" for t, mk in zip(ci[0].tolist(), cm[0].tolist())]
    dev = m.device
    return PromptPairs(ci.to(dev), ki.to(dev), cm.to(dev), km.to(dev), toks)


def answer_id(m: Model, text: str) -> tuple[int, str | None]:
    """The first token of an answer (``" John"``) and a note when the answer has more tokens than that one."""
    if m.tokenizer is None:
        raise ValueError(f"{m.name} has no tokenizer; pass answer token ids instead of text")
    ids = m.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"answer {text!r} tokenizes to nothing")
    note = None
    if len(ids) > 1:
        note = f"answer {text!r} is {len(ids)} tokens; using the first ({m.tokenizer.decode(ids[:1])!r})"
    return ids[0], note


# -- metrics ---------------------------------------------------------------------------------------------
class Metric:
    """A scalar per row from the last-position logits ``[rows, vocab]``; ``pair[r]`` is the row's pair index."""

    name = "metric"

    def __call__(self, logits_rv: torch.Tensor, pair_r: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _ids(x, n: int, what: str, device) -> torch.Tensor:
    t = torch.as_tensor(x if not isinstance(x, int) else [x], dtype=torch.long, device=device).reshape(-1)
    if t.numel() == 1 and n > 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{what} has {t.numel()} entries; expected one per prompt pair ({n})")
    return t


@dataclass
class LogitDiff(Metric):
    """``logit(correct) - logit(incorrect)`` at the last position (one token id, or one per pair)."""

    correct: Sequence[int] | int
    incorrect: Sequence[int] | int
    name = "logit_diff"

    def __call__(self, logits_rv, pair_r):
        n = int(pair_r.max()) + 1 if pair_r.numel() else 1
        c = _ids(self.correct, max(n, _count(self.correct)), "LogitDiff.correct", logits_rv.device)[pair_r]
        w = _ids(self.incorrect, max(n, _count(self.incorrect)), "LogitDiff.incorrect", logits_rv.device)[pair_r]
        return logits_rv.gather(1, c[:, None])[:, 0] - logits_rv.gather(1, w[:, None])[:, 0]


@dataclass
class Prob(Metric):
    """Probability (or log-probability with ``log=True``) of the target token at the last position."""

    target: Sequence[int] | int
    log: bool = False
    name = "prob"

    def __call__(self, logits_rv, pair_r):
        n = int(pair_r.max()) + 1 if pair_r.numel() else 1
        t = _ids(self.target, max(n, _count(self.target)), "Prob.target", logits_rv.device)[pair_r]
        lp = torch.log_softmax(logits_rv.float(), -1).gather(1, t[:, None])[:, 0]
        return lp if self.log else lp.exp()


@dataclass
class KL(Metric):
    """``KL(p_ref || p)`` at the last position against reference logits ``[n_pairs, vocab]`` (usually the clean run)."""

    ref_logits: torch.Tensor
    name = "kl"

    def __call__(self, logits_rv, pair_r):
        ref = torch.log_softmax(self.ref_logits.float().to(logits_rv.device)[pair_r], -1)
        lp = torch.log_softmax(logits_rv.float(), -1)
        return (ref.exp() * (ref - lp)).sum(-1)


def _count(x) -> int:
    return 1 if isinstance(x, int) else len(x)


# -- forward helpers -------------------------------------------------------------------------------------
def last_logits(m: Model, inputs: dict) -> torch.Tensor:
    """Logits at the last column ``[rows, vocab]``, computing the unembedding only there when the model allows.

    The forward goes through ``Model.__call__``, so position ids follow the attention mask (a left-padded row gets
    the same numbers as when run alone, issue 14 item 1).
    """
    kw = {"use_cache": False}
    ids = inputs.get("input_ids") if isinstance(inputs, dict) else None
    if "logits_to_keep" in inspect.signature(m.module.forward).parameters:
        # the last column as an index tensor, not ``1``: HF's slice ``[:, -1:]`` is a strided view that
        # ``F.linear`` turns into a bmm against the unembedding expanded once per row (64x the work at batch 64);
        # an index gives a contiguous [rows, 1, d] and one GEMM
        kw["logits_to_keep"] = torch.tensor([ids.shape[1] - 1], device=ids.device) if ids is not None else 1
    out = m(dict(inputs), **kw)
    logits = out if isinstance(out, torch.Tensor) else getattr(out, "logits", None)
    if logits is None or logits.dim() != 3:
        raise ValueError(f"{m.name} ({m.family}) gives no [batch, pos, vocab] logits (not a causal LM): patching "
                         f"metrics read the last-position logits; use path_patch / subspace_effect with a score of "
                         f"your own for this model")
    return logits[:, -1]


def site_list(m: Model, sites) -> list[str]:
    """Expand ``'blocks.*.resid_pre'`` style patterns (``*`` = every layer) and validate names."""
    sites = [sites] if isinstance(sites, str) else list(sites)
    out = []
    for s in sites:
        if "*" in s:
            out += [s.replace("*", str(i)) for i in range(m.n_layers)]
        else:
            out.append(s)
    return m.check_sites(out)


# -- results ---------------------------------------------------------------------------------------------
@dataclass
class PatchResult:
    """A labelled grid of metric values after patching.

    ``values``: metric (mean over pairs) per cell, shape ``[len(labels[d]) for d in dims]``; ``per_pair``: the same
    with a trailing pair dim (or None); ``clean``/``corrupt``: the metric on the unpatched runs; ``base``/``target``
    say which of those the patch starts from and moves towards (``normalized`` = 0 at base, 1 at target).
    """

    values: torch.Tensor
    dims: tuple[str, ...]
    labels: dict[str, list[str]]
    clean: float
    corrupt: float
    metric: str
    method: str = "activation"
    direction: str = "denoise"
    per_pair: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        shape = tuple(len(self.labels[d]) for d in self.dims)
        if tuple(self.values.shape) != shape:
            raise ValueError(f"PatchResult values have shape {tuple(self.values.shape)}; labels give {shape}")

    @property
    def base(self) -> float:
        return self.corrupt if self.direction == "denoise" else self.clean

    @property
    def target(self) -> float:
        return self.clean if self.direction == "denoise" else self.corrupt

    @property
    def normalized(self) -> torch.Tensor:
        """``(value - base) / (target - base)``: 1 = the patch fully moves the metric to the other run's value."""
        den = self.target - self.base
        if abs(den) < 1e-12:
            raise ValueError("clean and corrupted metrics are equal; the normalised effect is undefined")
        return (self.values - self.base) / den

    def to_dict(self) -> dict:
        return {"dims": list(self.dims), "labels": self.labels, "clean": self.clean, "corrupt": self.corrupt,
                "metric": self.metric, "method": self.method, "direction": self.direction, "meta": self.meta}

    def save(self, folder: str | os.PathLike, heatmap: bool = True) -> Path:
        """Write ``result.json`` + ``result.safetensors`` (+ ``heatmap.png``) into ``folder`` (an ``actlab.artifact``
        folder of kind ``patch.result``; every file atomic, the JSON last)."""
        ts = {"values": self.values.detach().float().cpu()}
        if self.per_pair is not None:
            ts["per_pair"] = self.per_pair.detach().float().cpu()
        with folder_lock(folder, what="writing a patch result"):  # two writers would mix their files
            folder = save_artifact(folder, KIND, self.to_dict(), ts, version=FORMAT_VERSION,
                                   tensors_file=RESULT_TENSORS, cfg_file=RESULT_JSON)
            if heatmap:
                self.heatmap(folder / "heatmap.png")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> PatchResult:
        """Read a folder written by ``save`` (or by actlab before artifacts: kind ``actlab.patch_result``)."""
        a = load_artifact(folder, KIND, version=FORMAT_VERSION, tensors_file=RESULT_TENSORS, cfg_file=RESULT_JSON,
                          legacy="actlab.patch_result")
        js, ts = a.config, a.tensors
        if "values" not in ts:
            raise ArtifactError(f"{Path(folder) / RESULT_TENSORS} holds no 'values' tensor (it has {sorted(ts)})")
        return cls(ts["values"], tuple(js["dims"]), js["labels"], js["clean"], js["corrupt"], js["metric"],
                   js["method"], js["direction"], ts.get("per_pair"), js.get("meta", {}))

    def cell_labels(self) -> list[str]:
        """One 'label | label' name per cell, in ``values.flatten()`` order."""
        names = [""]
        for d in self.dims:
            names = [f"{a} | {b}" if a else b for a in names for b in self.labels[d]]
        return names

    def top_cells(self, k: int = 10) -> list[tuple[float, str]]:
        """The ``k`` cells with the largest |normalised effect| (|value| when clean == corrupt), as (value, name)."""
        try:
            v = self.normalized.flatten()
        except ValueError:
            v = self.values.flatten()
        names = self.cell_labels()
        return [(float(v[i]), names[i]) for i in v.abs().topk(min(k, v.numel())).indices.tolist()]

    def describe(self) -> str:
        """One line saying what the numbers are: method, direction (noising/denoising) and metric."""
        what = {"denoise": "denoising: clean activations patched into the corrupted run",
                "noise": "noising: corrupted activations patched into the clean run"}.get(self.direction,
                                                                                          self.direction)
        return f"{self.method} patching ({what}), metric {self.metric}"

    def heatmap_figure(self, normalized: bool = True, title: str | None = None):
        """The heat map as a matplotlib figure: first dim as rows, the remaining dims flattened into columns.

        The figure is wide enough for its (wrapped) title and tick labels, so nothing is cut when saved.
        """
        import textwrap

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        try:
            v = self.normalized if normalized else self.values
        except ValueError:
            v, normalized = self.values, False
        v = v.detach().float().cpu()
        rows = self.labels[self.dims[0]]
        if v.dim() == 1:
            v = v[:, None]
            cols = [self.metric]
        else:
            v = v.reshape(v.shape[0], -1)
            cols = [""]
            for d in self.dims[1:]:
                cols = [f"{a}|{b}" if a else b for a in cols for b in self.labels[d]]
        title = title or (f"{self.method} patching ({self.direction}): {'normalised ' if normalized else ''}"
                          f"{self.metric}")
        label_in = 0.07 * max(map(len, rows)) + 1.8  # row labels + colour bar, inches at 7 pt
        width = min(max(0.35 * v.shape[1] + label_in, 4.5), 40)
        title = "\n".join(textwrap.wrap(title, max(20, int((width - 0.5) / 0.1)))) or title
        height = min(1.5 + 0.3 * v.shape[0] + 0.07 * max(map(len, cols)) + 0.2 * title.count("\n"), 40)
        fig, ax = plt.subplots(figsize=(width, height))
        lim = float(v.abs().max()) or 1.0
        im = ax.imshow(v.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        return fig

    def heatmap(self, path: str | os.PathLike, normalized: bool = True, title: str | None = None) -> Path:
        """PNG heat map (see ``heatmap_figure``), written atomically; the saved box takes in every label."""
        import io

        import matplotlib.pyplot as plt

        fig = self.heatmap_figure(normalized, title)
        buf = io.BytesIO()
        try:
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        finally:
            plt.close(fig)
        return atomic_write_bytes(path, buf.getvalue())


MetricLike = Metric | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Effect:
    """Scores of the base run, the source run and the patched base run; ``normalized`` =
    ``(patched - base) / (source - base)``, 1 = behaviour fully moved to the source's."""

    base: float
    source: float
    patched: float

    @property
    def normalized(self) -> float:
        den = self.source - self.base
        if abs(den) < 1e-12:
            raise ValueError("base and source scores are equal; the normalised effect is undefined")
        return (self.patched - self.base) / den
