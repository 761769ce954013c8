"""Interventions and recording inside generate(): KV-cached steps equal a full re-run each step."""
import pytest
import torch

from actlab import Add, Clamp


def reference_greedy(m, enc, n_new, mapping):
    """Re-run the whole (left-padded) sequence every step, no cache, with the interventions active."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    for _ in range(n_new):
        pos_ids = (mask.long().cumsum(1) - 1).clamp(min=0)
        with torch.no_grad(), m.intervene(mapping):
            logits = m.module(input_ids=ids, attention_mask=mask, position_ids=pos_ids, use_cache=False).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    return ids


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("prompts", [["hello there"], ["hello there, how are you", "hi"]], ids=["single", "leftpad"])
@pytest.mark.parametrize("positions", ["all", slice(3, 9), "last"])
def test_generate_with_intervention_equals_reference_loop(tiny, name, prompts, positions):
    m = tiny(name)
    torch.manual_seed(1)
    v = torch.randn(64) * 3
    mapping = {"blocks.0.resid_post": Add(v, alpha=1.0, positions=positions), "blocks.1.mlp_out": Clamp(index=3, value=2.0)}
    enc = m.tokenize(prompts)
    n_new = 8
    with m.intervene(mapping):
        out = m.generate(prompts, max_new_tokens=n_new, return_ids=True, min_new_tokens=n_new)
    ref_mapping = dict(mapping)
    if positions == "last":  # with a KV cache, 'last' is the newest token of each step: the last prompt token on
        lengths = enc["attention_mask"].sum(1)
        mask = torch.arange(64)[None] >= (lengths[:, None] - 1)
        ref_mapping["blocks.0.resid_post"] = Add(v, alpha=1.0, positions=mask)
    ref = reference_greedy(m, enc, n_new, ref_mapping)
    assert torch.equal(out, ref)
    plain = m.generate(prompts, max_new_tokens=n_new, return_ids=True, min_new_tokens=n_new)
    assert not torch.equal(plain, out)  # the intervention did something


def test_recording_during_generate_gives_every_step(tiny):
    m = tiny("tiny-llama")
    prompts = ["abc def", "a"]
    enc = m.tokenize(prompts)
    p = enc["input_ids"].shape[1]
    site = "blocks.1.resid_post"
    with m.recording([site]) as rec:
        ids = m.generate(prompts, max_new_tokens=5, return_ids=True, min_new_tokens=5)
    steps = rec.steps[site]
    assert len(steps) == 5 and steps[0].shape[1] == p and all(s.shape[1] == 1 for s in steps[1:])
    full = rec[site]
    assert full.shape == (2, p + 4, 64)
    mask = (ids != m.tokenizer.pad_token_id).long()
    pos_ids = (mask.cumsum(1) - 1).clamp(min=0)
    ref = m.record({"input_ids": ids[:, :-1], "attention_mask": mask[:, :-1], "position_ids": pos_ids[:, :-1]},
                   sites=[site])[site]
    valid = mask[:, :-1].bool()
    torch.testing.assert_close(full[valid], ref[valid], atol=1e-5, rtol=1e-5)


def test_step_restarts_at_each_prefill(tiny):
    m = tiny("tiny-llama")
    seen = []

    def log(act, ctx):
        seen.append((ctx.step, ctx.info.past))

    with m.intervene({"blocks.0.resid_post": log}):
        m.generate(["abc"], max_new_tokens=3, min_new_tokens=3)
        m(m.tokenize(["abcd"]))
        m.generate(["xy"], max_new_tokens=2, min_new_tokens=2)
    assert [s for s, _ in seen] == [0, 1, 2, 0, 0, 1]
    assert [p for _, p in seen] == [0, 4, 5, 0, 0, 3]


def test_save_interventions_with_shared_tensors(tiny, tmp_path):
    from actlab import Ablate, load_interventions, save_interventions

    v = torch.randn(64)
    path = save_interventions(tmp_path / "x.json", [("blocks.0.resid_post", Add(v)), ("blocks.1.resid_post", Ablate(v)),
                                                    ("blocks.1.mlp_out", Add(v[:64]))])
    loaded = load_interventions(path)
    assert torch.equal(loaded[0][1].vector, v) and torch.equal(loaded[1][1].direction, v)
