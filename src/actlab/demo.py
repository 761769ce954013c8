"""``actlab demo``: the main job on the embedded SmolLM2-135M-Instruct, real computation end to end."""
from __future__ import annotations

import textwrap
import time

import torch

PROMPTS = [
    "The capital of France is",
    "Photosynthesis is the process by which plants",
    "In 1969, astronauts first landed on",
    "A good way to learn programming is to",
]
POSITIVE = ["I love this, it is wonderful and makes me so happy.", "What a fantastic, joyful and delightful day!",
            "This is the best gift ever, thank you so much!", "I feel great, everything is going beautifully.",
            "The movie was brilliant and heartwarming.", "Such a lovely, kind and cheerful person."]
NEGATIVE = ["I hate this, it is awful and makes me so sad.", "What a terrible, miserable and depressing day!",
            "This is the worst gift ever, it is useless.", "I feel awful, everything is going horribly.",
            "The movie was dreadful and boring.", "Such a nasty, cruel and gloomy person."]
STEER_PROMPTS = ["Tell me about your weekend.", "Describe the weather today.", "What do you think of my new haircut?"]


def run_demo(model_name: str = "smollm2-135m-instruct", max_new_tokens: int = 32, layer: int | None = None,
             strength: float = 0.4) -> dict:
    """Load, list sites, record, print norms and top activations, steer by mean difference. Returns the numbers."""
    from actlab import Add, load_model

    torch.manual_seed(0)
    t0 = time.time()
    m = load_model(model_name)
    print(f"loaded {m} in {time.time() - t0:.1f}s\n")
    kinds = sorted({s.split(".", 2)[2] for s in m.sites if s.startswith("blocks.")})
    print(f"{len(m.sites)} sites: embed, blocks.{{0..{m.n_layers - 1}}}.{{{', '.join(kinds)}}}, "
          f"{', '.join(s for s in m.sites if not s.startswith('blocks.') and s != 'embed')}\n")

    sites = [f"blocks.{i}.resid_post" for i in range(m.n_layers)]
    enc = m.tokenize(PROMPTS)
    acts = m.record(enc, sites=sites)
    valid = enc["attention_mask"].bool()
    print("per-layer residual norm, mean over real tokens (first token excluded) | first token:")
    first = valid.float().argmax(1)
    rows = torch.arange(len(PROMPTS))
    rest = valid.clone()
    rest[rows, first] = False
    norms, firsts = [], []
    for s in sites:
        n = acts[s].norm(dim=-1)
        norms.append(n[rest].mean().item())
        firsts.append(n[rows, first].mean().item())
    for i, (n, f) in enumerate(zip(norms, firsts)):
        print(f"  layer {i:2d}: {n:8.1f} {'#' * int(30 * n / max(norms)):<30} | {f:9.1f}")
    print()

    stack = torch.stack([acts[s] for s in sites])  # [layer, b, p, d]
    stack = stack.masked_fill(~valid[None, :, :, None], 0)
    flat = stack.abs().flatten()
    top = flat.topk(8)
    shape = stack.shape
    print("largest activations (layer, prompt, position, token, channel, value):")
    found = []
    for idx in top.indices.tolist():
        li, rem = divmod(idx, shape[1] * shape[2] * shape[3])
        bi, rem = divmod(rem, shape[2] * shape[3])
        pi, ch = divmod(rem, shape[3])
        tok = m.tokenizer.decode([int(enc["input_ids"][bi, pi])])
        val = stack[li, bi, pi, ch].item()
        found.append((li, bi, pi, tok, ch, val))
        median = stack[li].abs()[valid].median().item()
        print(f"  layer {li:2d}  prompt {bi}  pos {pi:2d}  token {tok!r:12}  channel {ch:4d}  value {val:9.2f}"
              f"  (x{abs(val) / max(median, 1e-9):.0f} the layer's median |a|)")
    print()

    layer = m.n_layers // 3 if layer is None else layer
    site = f"blocks.{layer}.resid_post"
    pos = m.record(POSITIVE, sites=[site], positions="last")[site]
    neg = m.record(NEGATIVE, sites=[site], positions="last")[site]
    direction = pos.mean(0) - neg.mean(0)
    print(f"steering vector: mean difference positive - negative at {site} (last token), |v| = "
          f"{direction.norm():.2f}; added with norm {strength} x the layer's mean residual norm\n")
    scale = strength * norms[layer] / direction.norm()
    before = m.generate(STEER_PROMPTS, max_new_tokens=max_new_tokens, chat=True)
    with m.intervene({site: Add(direction, alpha=float(scale))}):
        after = m.generate(STEER_PROMPTS, max_new_tokens=max_new_tokens, chat=True)
    w = 48
    print(f"{'prompt / before':<{w}} | after (+positive)")
    print("-" * (2 * w + 3))
    for p, b, a in zip(STEER_PROMPTS, before, after):
        print(f"> {p}")
        bl = textwrap.wrap(b.replace("\n", " "), w) or [""]
        al = textwrap.wrap(a.replace("\n", " "), w) or [""]
        for i in range(max(len(bl), len(al))):
            print(f"{bl[i] if i < len(bl) else '':<{w}} | {al[i] if i < len(al) else ''}")
        print()
    print(f"demo finished in {time.time() - t0:.1f}s")
    return {"norms": norms, "top": found, "before": before, "after": after}
