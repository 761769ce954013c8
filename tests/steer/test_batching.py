"""Batched == one at a time (issue 14 item 1): a left-padded row must not depend on its batch mates, on models with
learned absolute positions (GPT-2) as on rotary ones (Llama)."""
import random

import pytest
import torch

from actlab.steer import extract
from actlab.steer.evaluate import ProbeScorer, completion_perplexity
from actlab.steer.refusal import acts_at

LETTERS = "abcdefghij klmnopqrstuvwxyz"


def texts(seed: int, n: int = 16) -> list[str]:
    """Texts of very different lengths (3..29 characters), so a batch is heavily left padded."""
    rng = random.Random(seed)
    return ["".join(rng.choice(LETTERS) for _ in range(rng.randrange(3, 30))) for _ in range(n)]


def cos(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("position", ["last", "mean"])
def test_extract_batch_16_equals_batch_1(tiny, name, position):
    m = tiny(name)
    pos, neg = texts(0), texts(1)
    site = "blocks.1.resid_post"
    a = extract(m, pos, neg, site, position=position, batch_size=16)[site]
    b = extract(m, pos, neg, site, position=position, batch_size=1)[site]
    assert cos(a.vector, b.vector) > 0.9999  # was 0.36 (mean) / 0.88 (last) on tiny-gpt2
    assert a.norms["vector"] == pytest.approx(b.norms["vector"], rel=1e-4)
    assert a.norms["resid_median"] == pytest.approx(b.norms["resid_median"], rel=1e-4)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_perplexity_and_probe_batched_equal_single(tiny, name):
    m = tiny(name)
    prompts, completions = texts(2, 8), texts(3, 8)
    p8 = completion_perplexity(m, prompts, completions, batch_size=8)
    p1 = completion_perplexity(m, prompts, completions, batch_size=1)
    assert p8.per_text == pytest.approx(p1.per_text, rel=1e-4)
    site = "blocks.1.resid_post"
    d = extract(m, texts(4, 4), texts(5, 4), site, batch_size=1)[site]
    sc = ProbeScorer(m, d)
    assert sc.per_text(prompts) == pytest.approx([sc.per_text([p])[0] for p in prompts], rel=1e-4, abs=1e-6)


def test_instruction_activations_batched_equal_single(tiny):
    m = tiny("tiny-gpt2")
    m.tokenizer.chat_template = ("{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
                                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    try:
        ins = texts(6, 6)
        a = acts_at(m, ins, ["blocks.1.resid_pre"], "t_inst", batch_size=6)["blocks.1.resid_pre"]
        b = acts_at(m, ins, ["blocks.1.resid_pre"], "t_inst", batch_size=1)["blocks.1.resid_pre"]
        assert torch.allclose(a, b, atol=1e-5)
    finally:
        m.tokenizer.chat_template = None
