"""Forward passes of the neurofeedback tasks over a shared prefix: the prefix (the in-context examples) runs once and
its key/value cache is reused by every query suffix, batched with right padding (no query sees another's padding,
positions continue from the prefix). Gives the label-token log-probabilities at each suffix's last position
(reporting), the site's states over a teacher-forced span (implicit control), and sampled continuations with the
states of their own tokens (explicit control)."""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from actlab.models import Model


def prefix_cache(model: Model, prefix: Sequence[int]) -> Any:
    """The key/value cache of one run over ``prefix`` token ids."""
    if not prefix:
        raise ValueError("empty prefix: the neurofeedback prompts always start with the task's instruction")
    ids = torch.tensor([list(prefix)], device=model.device)
    with torch.no_grad():
        out = model({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, use_cache=True)
    return out.cache


def _run(model: Model, cache: Any, n_prefix: int, rows: Sequence[Sequence[int]],
         site: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    """(logits [b, L, vocab], site states [b, L, d] or None, real lengths) of suffix rows after the cached prefix."""
    lens = [len(r) for r in rows]
    if min(lens) == 0:
        raise ValueError("empty query suffix")
    b, L = len(rows), max(lens)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    ids = torch.full((b, L), pad, dtype=torch.long)
    mask = torch.zeros(b, n_prefix + L, dtype=torch.long)
    mask[:, :n_prefix] = 1
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(list(r))
        mask[i, n_prefix:n_prefix + len(r)] = 1
    pos = (n_prefix + torch.arange(L))[None].expand(b, L)
    kv = copy.deepcopy(cache)
    kv.batch_repeat_interleave(b)
    enc = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
    with torch.no_grad():
        if site is None:
            return model(enc, cache=kv, use_cache=True).logits.float(), None, lens
        with model.recording(site, dtype=torch.float32) as rec:
            logits = model(enc, cache=kv, use_cache=True).logits.float()
        return logits, rec[site], lens


def label_logprobs(model: Model, prefix: Sequence[int], suffixes: Sequence[Sequence[int]],
                   label_ids: tuple[int, int], batch_size: int = 8) -> torch.Tensor:
    """``[n, 2]`` log-probabilities of the label tokens (0, 1) as the next token after each prefix + suffix."""
    cache, out = prefix_cache(model, prefix), []
    for i in range(0, len(suffixes), batch_size):
        logits, _, lens = _run(model, cache, len(prefix), suffixes[i:i + batch_size])
        last = logits[torch.arange(len(lens)), torch.tensor(lens) - 1].log_softmax(-1)
        out.append(last[:, list(label_ids)])
    return torch.cat(out)


def _pool(states: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "mean":
        return states.mean(0)
    if pooling == "last":
        return states[-1]
    raise ValueError(f"pooling={pooling!r}; use 'mean' or 'last'")


def span_states(model: Model, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], spans: Sequence[int],
                site: str, pooling: str = "mean", batch_size: int = 8) -> torch.Tensor:
    """``[n, d]`` the site's states over each suffix's last ``spans[i]`` tokens (pooled), after the cached prefix."""
    cache, out = prefix_cache(model, prefix), []
    for i in range(0, len(suffixes), batch_size):
        _, acts, lens = _run(model, cache, len(prefix), suffixes[i:i + batch_size], site)
        for j, (n, k) in enumerate(zip(lens, spans[i:i + batch_size])):
            if not 1 <= k <= n:
                raise ValueError(f"span of {k} tokens does not fit suffix {i + j} of {n} tokens")
            out.append(_pool(acts[j, n - k:n], pooling))
    return torch.stack(out)


def sample_with_states(model: Model, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], site: str, *,
                       max_new_tokens: int = 24, temperature: float = 0.7, stop_ids: Sequence[int] = (),
                       pooling: str = "mean", seed: int = 0) -> tuple[list[int], list[list[int]], torch.Tensor]:
    """One sampled continuation of prefix + ``suffixes[i]`` per row (equal-length suffixes): (kept row indices,
    their token ids without the stop token, ``[kept, d]`` the site's states at their own tokens, pooled). The states
    are the ones the model had while writing (each token's state when it is fed back), after the cached prefix. Rows
    that stop before writing a token are dropped (all of them dropped raises)."""
    g = torch.Generator().manual_seed(seed)
    n, L = len(suffixes), len(suffixes[0]) if suffixes else 0
    if n == 0 or any(len(s) != L for s in suffixes) or L == 0:
        raise ValueError(f"need >= 1 non-empty suffixes of one length; got lengths {[len(s) for s in suffixes]}")
    kv = copy.deepcopy(prefix_cache(model, prefix))
    kv.batch_repeat_interleave(n)
    P = len(prefix)
    ids = torch.tensor([list(s) for s in suffixes])
    enc = {"input_ids": ids, "attention_mask": torch.ones(n, P + L, dtype=torch.long),
           "position_ids": (P + torch.arange(L))[None].expand(n, L)}
    stops = set(int(t) for t in stop_ids)
    toks: list[list[int]] = [[] for _ in range(n)]
    states: list[list[torch.Tensor]] = [[] for _ in range(n)]
    done = [False] * n
    with torch.no_grad():
        for step in range(max_new_tokens + 1):
            with model.recording(site, dtype=torch.float32) as rec:
                out = model(enc, cache=kv, use_cache=True)
            if step > 0:   # the states of the tokens fed in this call, i.e. the last sampled ones
                for i in range(n):
                    if not done[i] and len(toks[i]) == step:
                        states[i].append(rec[site][i, -1])
            if step == max_new_tokens:
                break
            probs = (out.logits[:, -1].float() / temperature).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=g)[:, 0]
            for i in range(n):
                if done[i]:
                    continue
                t = int(nxt[i])
                if t in stops:
                    done[i] = True
                else:
                    toks[i].append(t)
            if all(done):
                break
            kv = out.cache
            total = enc["attention_mask"].shape[1] + 1
            enc = {"input_ids": nxt[:, None], "attention_mask": torch.ones(n, total, dtype=torch.long),
                   "position_ids": torch.full((n, 1), total - 1)}
    keep = [i for i in range(n) if states[i]]
    if not keep:
        raise ValueError(f"all {n} samples stopped before writing any token")
    return keep, [toks[i] for i in keep], torch.stack([_pool(torch.stack(states[i]), pooling) for i in keep])
