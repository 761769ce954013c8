"""Planted-ground-truth fixtures for the steering tests: tiny models trained for seconds on synthetic tasks."""
import random

import pytest
import torch

from actlab.utils import num_threads

FILLER = "cdefghijklmnopqrstuvwxyz"


def ids_of(m, text: str) -> list[int]:
    return m.tokenizer(text, add_special_tokens=False)["input_ids"]


def one_thread():
    """Tiny-model training is faster on one thread on a loaded machine."""
    return num_threads(1)


def train_pro_con(seed: int = 0, steps: int = 80):
    """tiny-llama trained so that a pro token 'A' in the prompt makes the answer '+', a con token 'B' makes it '-',
    and neither makes it '0'. Returns (model, make_prompt)."""
    from actlab import load_model

    torch.manual_seed(seed)
    rng = random.Random(seed)
    m = load_model("tiny-llama")
    m.module.requires_grad_(True).train()
    target = {"A": ids_of(m, "+")[0], "B": ids_of(m, "-")[0], "": ids_of(m, "0")[0]}

    def make(tag: str) -> str:
        body = [rng.choice(FILLER) for _ in range(7)]
        body.insert(rng.randrange(8), tag or rng.choice(FILLER))
        return "".join(body) + "="

    opt = torch.optim.Adam(m.module.parameters(), lr=1e-2)
    with one_thread():
        for _ in range(steps):
            tags = [rng.choice(["A", "B", ""]) for _ in range(32)]
            enc = m.tokenizer([make(t) for t in tags], return_tensors="pt")
            logits = m.module(**enc).logits[:, -1]
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([target[t] for t in tags]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    m.module.requires_grad_(False).eval()
    return m, make


@pytest.fixture(scope="session")
def pro_con():
    return train_pro_con()


def train_moe_planted(seed: int = 0, steps: int = 40):
    """tiny-mixtral with a trigger token 'T' routed (planted router weights) to expert 3 of block 1; only that
    expert is then trained so that after 'T' the model emits 'R' (the "refuse" token). 'S' is T's matched control:
    the same embedding without the planted trigger direction, so block 0 routes S and T alike.
    Returns (model, "T", "S", "R")."""
    from actlab import load_model

    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    m = load_model("tiny-mixtral")
    mod = m.module
    T, S, R = ids_of(m, "T")[0], ids_of(m, "S")[0], ids_of(m, "R")[0]
    d = m.d_model
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=g))
    u, e0 = q[:, 0], q[:, 1]
    with torch.no_grad():
        E = mod.model.embed_tokens.weight
        E -= (E @ u)[:, None] * u + (E @ e0)[:, None] * e0
        E += 0.1 * e0  # a shared channel: lets the router keep expert 3 off for ordinary tokens
        E[S] = E[T]
        E[T] += 1.0 * u
        w_r = mod.lm_head.weight[R]
        mod.lm_head.weight[R] = 6 * w_r / w_r.norm()  # a readable "refuse" token (random rows have norm ~0.16)
        g1 = mod.model.layers[1].mlp.gate.weight
        g1[3] = 4.0 * u - 4.0 * e0
        for lay in mod.model.layers:  # no other router reads the planted directions
            w = lay.mlp.gate.weight
            if w is not g1:
                w -= (w @ u)[:, None] * u + (w @ e0)[:, None] * e0
            else:
                w[:3] -= (w[:3] @ u)[:, None] * u + (w[:3] @ e0)[:, None] * e0
    experts = mod.model.layers[1].mlp.experts
    params = [experts.gate_up_proj, experts.down_proj]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-1)
    with one_thread():
        for _ in range(steps):
            texts = ["".join(rng.choice(FILLER) for _ in range(rng.randrange(3, 9))) + "T" for _ in range(16)]
            enc = m.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left")
            logits = mod(**enc).logits[:, -1]
            loss = torch.nn.functional.cross_entropy(logits, torch.full((16,), R))
            opt.zero_grad()
            loss.backward()
            for p in params:
                p.grad[:3] = 0  # only expert 3 learns the behaviour
            opt.step()
    for p in params:
        p.requires_grad_(False)
    return m, "T", "S", "R"


@pytest.fixture(scope="session")
def moe_planted():
    return train_moe_planted()
