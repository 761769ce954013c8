"""MoTE on a real model: SmolLM2-135M-Instruct MoEfied into 8 experts per block, top-6 (``actlab.steer.moefy``;
built once into the actlab cache, ~4 min on a loaded CPU). Its held-out loss on the demo corpus stays near the dense
model's (measured 4.18 vs 3.48; with all 8 experts it equals the dense model, tests/steer/test_moefy.py); fTRI on
chat-templated harmful vs harmless instructions ranks experts, and switching the top ones off removes them from
every token's selection while each token still uses exactly 6 experts. Refusal figures are in docs/steer.md."""
import pytest
import torch

from actlab import load_model
from actlab.data import pack_contexts
from actlab.steer.moefy import demo_texts, moefied
from actlab.steer.mote import ftri, routing_frequencies, switch
from actlab.steer.refusal import load_instructions


def per_layer(ranked, n=10, cap=2):
    """The first ``n`` ranked experts, at most ``cap`` per layer (top-6 of 8 leaves 2 switchable per token)."""
    out, seen = [], {}
    for layer, e in ranked:
        if seen.get(layer, 0) < cap:
            out.append((layer, e))
            seen[layer] = seen.get(layer, 0) + 1
        if len(out) == n:
            break
    return out


@pytest.mark.real
def test_mote_on_moefied_smollm2(smollm2):
    moe = load_model(str(moefied(smollm2, n_experts=8, top_k=6)))
    ids = pack_contexts(smollm2.tokenizer, demo_texts(260)[200:], 128, seed=1).input_ids[:4]
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def loss(m):
        with torch.no_grad():
            lg = m(enc).logits
        return float(torch.nn.functional.cross_entropy(lg[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten()))

    dense, sparse = loss(smollm2), loss(moe)
    assert sparse < dense + 1.0, (dense, sparse)            # near the dense model (measured +0.69 nats)
    tok = smollm2.tokenizer
    chat = [tok.apply_chat_template([{"role": "user", "content": x}], tokenize=False, add_generation_prompt=True)
            for x in load_instructions("harmful")[:8] + load_instructions("harmless")[:8]]
    res = ftri(moe, chat[:8], chat[8:], score="z")
    top = per_layer(res.ranked)
    layers = [int(s.split(".")[1]) for s in moe.sites if s.endswith("moe.router")]
    best = top[0]
    assert float(res.freq_b[layers.index(best[0]), best[1]]) > float(res.freq_c[layers.index(best[0]), best[1]])
    with moe.intervene(switch(moe, top, "off")):
        freq = routing_frequencies(moe, chat[:4])
    assert all(float(freq[layers.index(layer), e]) == 0.0 for layer, e in top)
    assert torch.allclose(freq.sum(-1), torch.full((len(layers),), 6.0))   # still exactly 6 experts per token
