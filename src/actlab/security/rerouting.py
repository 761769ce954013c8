"""Subspace rerouting (SSR; security.md §4): a GCG-style discrete search over suffix tokens that moves the hidden state
of a prompt's target token (the last token by default) at chosen sites across a target along a "refusal" direction
(``actlab.steer``'s difference of means of harmful vs harmless prompts, or any given direction).

The measure at each site is the cosine ``cos(h_l, r_l)`` (the spec's steering variant) or, given a centre and a scale,
the normalised projection ``(h_l - c_l) . r_l / scale_l``: with c the midpoint of the harmful and harmless means and
scale half their distance, harmful prompts sit at +1 on average and harmless ones at -1 (raw cosines are dominated by
the residual stream's large common mean). Loss ``sum_l relu(measure_l - target)^2``: zero once every site is at or
below the target (the spec drives ``cos`` to ``-s`` two-sidedly; one-sided, "crossed" is exactly "loss 0"). Each iteration takes
the one-hot gradient of the loss at the buffer's best suffix (through the embeddings, ``model.record(grad=True)``, the
pass stopping after the last site), samples ``search_width`` candidates that swap ``n_replace`` positions for tokens
among the ``search_topk`` most negative-gradient ones, drops candidates whose decode->re-encode changes the ids, and
merges the evaluated ones into a buffer of the best ``buffer_size``; after ``patience`` stalled iterations the best
entry is archived and the search jumps to a buffer entry drawn with probability ``softmax(-loss)``. Dual-use: the
defaults target the tiny toy models."""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from actlab.models import Model


@dataclass
class SearchConfig:
    """The discrete optimiser (the spec's defaults except the width, sized for a CPU)."""

    suffix_len: int = 12
    """suffix tokens appended to the instruction"""
    steps: int = 40
    """max iterations"""
    search_width: int = 64
    """candidates per iteration"""
    search_topk: int = 64
    """most negative-gradient tokens kept per position"""
    buffer_size: int = 10
    """best unique suffixes kept"""
    replace_coefficient: float = 1.8
    """n_replace = max(1, floor(len * min(1, loss/initial)^(1/coef)))"""
    patience: int = 10
    """stalled iterations before a jump"""
    early_stop_loss: float = 0.0
    """stop when the best loss reaches this (0: every site crossed the target)"""
    target: float = -0.1
    """measure value (cosine, or normalised projection) that counts as crossed (at or below)"""
    position: str = "last"
    """token read: last (the prompt's last token, SSR's) or t_inst (the suffix's last token)"""
    seed: int = 0
    """seed of the initial buffer and the candidate sampling"""
    batch_size: int = 64
    """candidates per forward pass"""

    def __post_init__(self) -> None:
        if min(self.suffix_len, self.steps, self.search_width, self.search_topk, self.buffer_size, self.batch_size) < 1:
            raise ValueError("suffix_len, steps, search_width, search_topk, buffer_size and batch_size must be >= 1")
        if self.position not in ("last", "t_inst"):
            raise ValueError(f"position={self.position!r}; use 'last' or 't_inst'")


@dataclass
class SearchResult:
    """The best suffix, the loss curve (best over buffer and archive, per iteration) and the measure reached per site
    (``measure``: cos or proj)."""

    suffix_ids: list[int]
    suffix: str
    losses: list[float]
    score: dict[str, float]
    initial_score: dict[str, float]
    measure: str
    crossed: bool
    iterations: int
    n_candidates: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def prompt_parts(model: Model, instruction: str, chat: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids before the suffix, ids after it): the suffix goes right after the instruction (inside the user turn of
    the chat template when ``chat``)."""
    tok = model.tokenizer
    if tok is None:
        raise ValueError(f"{model.name} has no tokenizer; subspace rerouting searches over token ids")
    if not chat:
        return torch.tensor(tok(instruction)["input_ids"]), torch.zeros(0, dtype=torch.long)
    mark = "\x00SUFFIX\x00"
    text = tok.apply_chat_template([{"role": "user", "content": f"{instruction} {mark}"}], tokenize=False,
                                   add_generation_prompt=True)
    before, after = text.split(mark)
    return (torch.tensor(tok(before, add_special_tokens=False)["input_ids"]),
            torch.tensor(tok(after, add_special_tokens=False)["input_ids"]))


def allowed_tokens(model: Model) -> torch.Tensor:
    """Vocabulary ids a suffix may use: not special, and decoding to printable text that re-encodes to itself."""
    tok = model.tokenizer
    special = set(tok.all_special_ids)
    ok = []
    for i in range(int(model.adapter.W_E.shape[0])):
        if i in special or i >= len(tok):
            continue
        s = tok.decode([i])
        if s and s.isprintable() and tok(s, add_special_tokens=False)["input_ids"] == [i]:
            ok.append(i)
    if not ok:
        raise ValueError(f"{model.name}: no vocabulary token decodes and re-encodes to itself")
    return torch.tensor(ok)


class _Objective:
    """Loss and measure of suffixes at the target token: ``sum_l relu(measure_l - target)^2``."""

    def __init__(self, model: Model, before: torch.Tensor, after: torch.Tensor, directions: dict[str, torch.Tensor],
                 cfg: SearchConfig, centers: dict[str, torch.Tensor] | None = None,
                 scales: dict[str, float] | None = None) -> None:
        model.check_sites(list(directions))
        d = model.d_model
        for s, v in directions.items():
            if v.shape != (d,):
                raise ValueError(f"direction at {s} has shape {list(v.shape)}; {model.name} has d_model={d}")
        self.model, self.cfg, self.sites = model, cfg, list(directions)
        self.before, self.after = before.to(model.device), after.to(model.device)
        self.r = torch.stack([torch.nn.functional.normalize(directions[s].float(), dim=0) for s in self.sites])
        self.c = None
        if centers is not None:
            missing = [s for s in self.sites if s not in centers or s not in (scales or {})]
            if missing:
                raise ValueError(f"centers and scales must cover every direction's site; missing {missing}")
            self.c = torch.stack([centers[s].float() for s in self.sites])
            self.scale = torch.tensor([float(scales[s]) for s in self.sites])
            if not bool((self.scale > 0).all()):
                raise ValueError(f"scales must be > 0; got {scales}")
        n = len(before) + cfg.suffix_len + len(after)
        self.pos = n - 1 if cfg.position == "last" else len(before) + cfg.suffix_len - 1

    def cos(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[batch, sites]`` measure at the target token: cosine, or normalised centred projection."""
        h = torch.stack([acts[s][:, self.pos].float() for s in self.sites], 1)
        r = self.r.to(h.device)[None]
        if self.c is None:
            return torch.nn.functional.cosine_similarity(h, r, dim=-1)
        return ((h - self.c.to(h.device)[None]) * r).sum(-1) / self.scale.to(h.device)

    def loss(self, cos: torch.Tensor) -> torch.Tensor:
        return (cos - self.cfg.target).clamp_min(0).pow(2).sum(-1)

    def ids(self, suffixes: torch.Tensor) -> torch.Tensor:
        b = suffixes.shape[0]
        return torch.cat([self.before.expand(b, -1), suffixes.to(self.before.device), self.after.expand(b, -1)], 1)

    @torch.no_grad()
    def evaluate(self, suffixes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss [b], cos [b, sites]) of candidate suffixes (the pass stops after the last site)."""
        out_l, out_c = [], []
        for i in range(0, len(suffixes), self.cfg.batch_size):
            ids = self.ids(suffixes[i:i + self.cfg.batch_size])
            acts = self.model.record({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, self.sites)
            c = self.cos(acts)
            out_l.append(self.loss(c).cpu())
            out_c.append(c.cpu())
        return torch.cat(out_l), torch.cat(out_c)

    def grad(self, suffix: torch.Tensor) -> torch.Tensor:
        """``[suffix_len, vocab]``: gradient of the loss w.r.t. the suffix's one-hot token indicators."""
        W_E = self.model.adapter.W_E
        onehot = torch.nn.functional.one_hot(suffix.to(W_E.device), W_E.shape[0]).to(W_E.dtype).requires_grad_(True)
        emb = torch.cat([W_E[self.before], onehot @ W_E, W_E[self.after]])[None]
        acts = self.model.record({"inputs_embeds": emb, "attention_mask": torch.ones(emb.shape[:2], dtype=torch.long,
                                                                                     device=emb.device)},
                                 self.sites, grad=True)
        self.loss(self.cos(acts)).sum().backward()
        return onehot.grad.detach().float().cpu()


def subspace_reroute(model: Model, instruction: str, directions: dict[str, torch.Tensor], cfg: SearchConfig | None = None,
                     *, chat: bool = False, allowed: torch.Tensor | None = None,
                     centers: dict[str, torch.Tensor] | None = None, scales: dict[str, float] | None = None
                     ) -> SearchResult:
    """Search a suffix for ``instruction`` that puts every site's measure (cosine with its direction, or with
    ``centers``/``scales`` the normalised projection) at or below ``cfg.target`` (see the module docstring)."""
    cfg = cfg or SearchConfig()
    t0 = time.perf_counter()
    before, after = prompt_parts(model, instruction, chat)
    obj = _Objective(model, before, after, directions, cfg, centers, scales)
    allowed = allowed_tokens(model) if allowed is None else allowed.cpu()
    vocab = int(model.adapter.W_E.shape[0])
    block = torch.ones(vocab, dtype=torch.bool)
    block[allowed] = False
    rng, g = random.Random(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    init = allowed[torch.randint(len(allowed), (cfg.buffer_size, cfg.suffix_len), generator=g)]
    loss, cos = obj.evaluate(init)
    buffer = {tuple(s.tolist()): (float(l), c) for s, l, c in zip(init, loss, cos)}
    archive: dict[tuple, tuple[float, torch.Tensor]] = {}
    initial = min(v[0] for v in buffer.values())
    cur = min(buffer, key=lambda k: buffer[k][0])
    init_cos = buffer[cur][1]
    best_ever, stall, n_cand, losses, hist = initial, 0, 0, [], []
    it = 0
    for it in range(1, cfg.steps + 1):
        if best_ever <= cfg.early_stop_loss:
            it -= 1
            break
        suffix = torch.tensor(cur)
        gr = obj.grad(suffix)
        gr[:, block] = float("inf")
        top = (-gr).topk(min(cfg.search_topk, len(allowed)), dim=1).indices
        ratio = min(1.0, buffer[cur][0] / initial) if initial > 0 else 1.0
        n_rep = max(1, math.floor(cfg.suffix_len * ratio ** (1 / cfg.replace_coefficient)))
        cands = suffix.repeat(cfg.search_width, 1)
        for c in cands:
            for p in rng.sample(range(cfg.suffix_len), n_rep):
                c[p] = top[p, rng.randrange(top.shape[1])]
        cands = _retokenizes(model, torch.unique(cands, dim=0))
        cands = cands[[tuple(c.tolist()) not in buffer for c in cands]] if len(cands) else cands
        if len(cands):
            n_cand += len(cands)
            cl, cc = obj.evaluate(cands)
            for s, l, c in zip(cands, cl, cc):
                buffer[tuple(s.tolist())] = (float(l), c)
            buffer = dict(sorted(buffer.items(), key=lambda kv: kv[1][0])[:cfg.buffer_size])
        best_now = min(v[0] for v in buffer.values())
        if best_now < best_ever:
            best_ever, stall = best_now, 0
            cur = min(buffer, key=lambda k: buffer[k][0])
        else:
            stall += 1
        if stall >= cfg.patience and len(buffer) > 1:   # archive the best entry, jump to a sampled one
            k = min(buffer, key=lambda k: buffer[k][0])
            archive[k] = buffer.pop(k)
            keys = list(buffer)
            w = torch.softmax(-torch.tensor([buffer[k][0] for k in keys]), 0)
            cur = keys[int(torch.multinomial(w, 1, generator=g))]
            stall = 0
        losses.append(best_ever)
        hist.append({"iteration": it, "best_loss": best_ever, "current_loss": buffer[cur][0] if cur in buffer
                     else archive[cur][0], "n_replace": n_rep, "candidates": len(cands)})
    pool = {**archive, **buffer}
    best = min(pool, key=lambda k: pool[k][0])
    bl, bc = pool[best]
    return SearchResult(list(best), model.tokenizer.decode(list(best)), losses,
                        {s: float(v) for s, v in zip(obj.sites, bc)},
                        {s: float(v) for s, v in zip(obj.sites, init_cos)}, "cos" if centers is None else "proj",
                        bool(bl <= 0.0), it, n_cand,
                        time.perf_counter() - t0, hist)


def _retokenizes(model: Model, cands: torch.Tensor) -> torch.Tensor:
    """Keep the candidates whose decoded text re-encodes to the same ids (the spec's essential filter)."""
    tok = model.tokenizer
    keep = [tok(tok.decode(c.tolist()), add_special_tokens=False)["input_ids"] == c.tolist() for c in cands]
    return cands[torch.tensor(keep, dtype=torch.bool)] if len(cands) else cands


def random_baseline(model: Model, instruction: str, directions: dict[str, torch.Tensor], cfg: SearchConfig, *,
                    n: int = 32, chat: bool = False, allowed: torch.Tensor | None = None,
                    centers: dict[str, torch.Tensor] | None = None, scales: dict[str, float] | None = None
                    ) -> torch.Tensor:
    """``[n, sites]`` measure of ``n`` random suffixes of the same length (the control the search must beat)."""
    before, after = prompt_parts(model, instruction, chat)
    obj = _Objective(model, before, after, directions, cfg, centers, scales)
    allowed = allowed_tokens(model) if allowed is None else allowed.cpu()
    g = torch.Generator().manual_seed(cfg.seed + 1)
    return obj.evaluate(allowed[torch.randint(len(allowed), (n, cfg.suffix_len), generator=g)])[1]


@dataclass
class ReroutingConfig(SearchConfig):
    """An SSR run: the refusal direction from actlab.steer (harmful minus harmless, last token) or a saved one."""

    sites: str = ""
    """sites of the direction and the loss, comma separated (default: the middle block's resid_post)"""
    instruction: str = ""
    """the prompt to reroute (default: the first bundled harmful instruction)"""
    direction: str = ""
    """a saved actlab.steer Direction folder (one site); empty: extract from the bundled harmful/harmless sets"""
    measure: str = "proj"
    """proj: projection centred at the harmful/harmless midpoint, in half-distances (harmful mean +1, harmless -1);
    cos: cosine with the direction (the spec's)"""
    target: float = -1.0
    """measure value that counts as crossed (proj -1: as far as the average harmless prompt)"""
    n_random: int = 32
    """random suffixes for the baseline"""
    judge: bool = False
    """also generate greedy chat replies (plain, with the suffix, with 8 random suffixes of its length) and judge
    refusals with actlab.steer's substring judge (needs a chat template)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.measure not in ("proj", "cos"):
            raise ValueError(f"measure={self.measure!r}; use 'proj' or 'cos'")


def refusal_subspace(model: Model, cfg: ReroutingConfig
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, dict[str, float]], bool]:
    """(directions per site, the ``centers``/``scales`` keywords of the ``proj`` measure (empty for ``cos``), the
    bundled harmful/harmless sets' mean measure per site, chat) for ``cfg``'s sites, measure and saved direction."""
    from actlab.steer import Direction, collect, direction_from_acts, load_instructions

    chat = bool(getattr(model.tokenizer, "chat_template", None))
    harmful, harmless = load_instructions("harmful"), load_instructions("harmless")
    loaded = Direction.load(cfg.direction) if cfg.direction else None
    sites = ([loaded.site] if loaded else [s.strip() for s in cfg.sites.split(",") if s.strip()]
             or [f"blocks.{model.n_layers // 2}.resid_post"])
    sites = model.check_sites(sites)
    # last-token states of the bundled sets (chat-templated when the model has a template): the refusal direction is
    # their difference of means (actlab.steer's extraction, as in steer extract --method mean_diff --position last)
    means = {name: collect(model, texts, sites, "last", chat)[0] for name, texts in
             (("harmful", harmful), ("harmless", harmless))}
    vec = ({loaded.site: loaded.vector.float()} if loaded else
           {s: direction_from_acts(means["harmful"][s], means["harmless"][s], "mean_diff", paired=False) for s in sites})
    kw: dict[str, Any] = {}
    if cfg.measure == "proj":
        mh, ms = ({s: means[k][s].mean(0) for s in vec} for k in ("harmful", "harmless"))
        r = {s: torch.nn.functional.normalize(vec[s], dim=0) for s in vec}
        kw = {"centers": {s: (mh[s] + ms[s]) / 2 for s in vec},
              "scales": {s: abs(float((mh[s] - ms[s]) @ r[s])) / 2 for s in vec}}

    def measure(x: torch.Tensor, s: str) -> torch.Tensor:
        if cfg.measure == "cos":
            return torch.nn.functional.cosine_similarity(x, vec[s][None], dim=-1)
        return (x - kw["centers"][s]) @ torch.nn.functional.normalize(vec[s], dim=0) / kw["scales"][s]

    ref = {k: {s: float(measure(means[k][s], s).mean()) for s in vec} for k in means}
    return vec, kw, ref, chat


def run_rerouting(cfg: ReroutingConfig, out: str | Path = "runs/rerouting", model: Model | None = None
                  ) -> dict[str, Any]:
    """Extract (or load) the refusal direction, search a suffix, compare with random suffixes; writes ``out``/
    report.md, report.json and loss.png. ``model`` defaults to the toy tiny-gpt2."""
    from actlab import load_model
    from actlab.probe import write_report
    from actlab.steer import load_instructions

    model = model or load_model("tiny-gpt2")
    vec, kw, ref, chat = refusal_subspace(model, cfg)
    harmful = load_instructions("harmful")
    instruction = cfg.instruction or harmful[0]
    res = subspace_reroute(model, instruction, vec, cfg, chat=chat, **kw)
    base = random_baseline(model, instruction, vec, cfg, n=cfg.n_random, chat=chat, **kw)
    report = {"model": model.name, "config": asdict(cfg), "chat": chat, "instruction": instruction,
              "result": res.to_json(), "reference_mean": ref,
              "random_suffix": {s: {"mean": float(base[:, i].mean()), "min": float(base[:, i].min())}
                                for i, s in enumerate(vec)}}

    if cfg.judge:
        from actlab.security.reroute_behaviour import judge_suffix

        report["behaviour"] = judge_suffix(model, instruction, res.suffix_ids, seed=cfg.seed)

    def draw(ax: Any) -> None:
        ax.plot(range(1, len(res.losses) + 1), res.losses, marker=".")
        ax.set_xlabel("iteration")
        ax.set_ylabel("best loss (buffer + archive)")
        ax.set_yscale("symlog", linthresh=1e-3)

    lines = [f"- instruction: {instruction!r}; suffix {res.suffix!r} ({cfg.suffix_len} tokens)",
             (f"- {'crossed' if res.crossed else 'did not cross'} the target {cfg.measure} <= {cfg.target:g} at every "
              f"site after {res.iterations} iterations ({res.n_candidates} candidates, {res.seconds:.1f} s)")]
    for s in vec:
        rb = report["random_suffix"][s]
        lines.append(f"- {s} ({cfg.measure}): {res.initial_score[s]:.3f} (best initial) -> **{res.score[s]:.3f}**; "
                     f"random suffixes mean {rb['mean']:.3f}, min {rb['min']:.3f}; bundled harmful prompts "
                     f"{ref['harmful'][s]:.3f}, harmless {ref['harmless'][s]:.3f}")
    if cfg.judge:
        b = report["behaviour"]
        lines.append(f"- refuses (substring judge): plain {b['refused_plain']}, with the suffix **{b['refused_suffix']}**"
                     f" ({b['reply_suffix'][:80]!r}), random suffixes {sum(b['random_refused'])}/"
                     f"{len(b['random_refused'])}")
    write_report(out, f"Subspace rerouting on {model.name}", report, lines=lines, figures={"loss.png": draw})
    return report
