"""Position ids follow the attention mask: a prompt inside a left-padded batch gives the numbers it gives alone,
in record / __call__ / run_with_cache / recording and generate, on every tiny architecture."""
import pytest
import torch

from actlab import load_model
from actlab.models.tiny import TINY

NAMES = sorted(TINY)  # every tiny architecture (tiny-neox included once it exists)
TEXTS = ["a much longer prompt, padded nothing", "short", "mid length"]


def _sites(m):
    return [f"blocks.{i}.resid_post" for i in range(m.n_layers)] + (["logits"] if "logits" in m.sites else [])


@pytest.mark.parametrize("name", NAMES)
def test_left_padded_batch_equals_each_prompt_alone(tiny, name):
    m = tiny(name)
    sites = _sites(m)
    enc = m.tokenize(TEXTS, padding_side="left")
    assert (enc["attention_mask"] == 0).any()  # really padded
    batch = m.record(enc, sites)
    _, cached = m.run_with_cache(enc, sites)
    with m.recording(sites) as rec, torch.no_grad():
        m(enc)
    for i, text in enumerate(TEXTS):
        alone = m.record(m.tokenize([text]), sites)
        n = alone[sites[0]].shape[1]
        for s in sites:
            for got in (batch[s], cached[s], rec[s]):
                torch.testing.assert_close(got[i, -n:], alone[s][0], rtol=0, atol=1e-5, msg=f"{name} {s} row {i}")


@pytest.mark.parametrize("name", NAMES)
def test_right_padding_keeps_default_ids(name):
    """With right padding the mask-following ids equal the module's own default ids, padding included."""
    m = load_model(name)  # a private copy: HF's output_hidden_states leaves its capture hooks on the module
    enc = m.tokenize(TEXTS, padding_side="right")
    kw = m.forward_kwargs(enc)
    if "position_ids" in kw:
        assert torch.equal(kw["position_ids"], torch.arange(enc["input_ids"].shape[1]).expand_as(enc["input_ids"]))
    ours = m.record(enc, ["blocks.0.resid_post"])["blocks.0.resid_post"]
    with torch.no_grad():
        raw = m.module(**enc, output_hidden_states=True)  # the module's own default position ids
    assert torch.equal(ours, raw.hidden_states[1])  # every position, padding included


@pytest.mark.parametrize("name", [n for n in NAMES if n != "tiny-bert"])
def test_generate_padded_batch_equals_one_at_a_time(tiny, name):
    m = tiny(name)
    if not m.is_causal_lm:
        pytest.skip(f"{name}: the site table has no 'logits' site yet, so it is not a causal LM for actlab")
    prompts = ["hello there, how are you", "hi", "a b c"]
    together = m.generate(prompts, max_new_tokens=6, min_new_tokens=6)
    assert together == [m.generate(p, max_new_tokens=6, min_new_tokens=6) for p in prompts]


def test_forward_kwargs_keeps_given_ids_and_handles_a_cache(tiny):
    m = tiny("tiny-gpt2")
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    ids = torch.ones(2, 5, dtype=torch.long)
    kw = m.forward_kwargs({"input_ids": ids, "attention_mask": mask})
    assert kw["position_ids"].tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    step = m.forward_kwargs({"input_ids": ids[:, :1], "attention_mask": torch.cat([mask, mask[:, :1] * 0 + 1], 1)})
    assert step["position_ids"].tolist() == [[3], [5]]  # a KV-cached step: the ids of its own tokens
    given = torch.zeros(2, 5, dtype=torch.long)
    assert m.forward_kwargs({"input_ids": ids, "attention_mask": mask, "position_ids": given})["position_ids"] is given
    assert "position_ids" not in m.forward_kwargs({"input_ids": ids})  # no mask: the module's defaults
