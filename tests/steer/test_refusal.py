"""Harmfulness vs refusal: synthetic separation check, chat-template position finding, the bundled sets."""
import pytest
import torch

from actlab import load_model
from actlab.steer import direction_from_acts
from actlab.steer.refusal import (
    harm_refusal_directions,
    instruction_positions,
    is_refusal,
    load_instructions,
    refusal_rate,
    steer_refusal,
)

TEMPLATES = {
    "chatml": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "llama2": "{% for m in messages %}<s>[INST] {{ m['content'] }} [/INST]{% endfor %}",
    "llama3": "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
              "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant"
              "<|end_header_id|>\n\n{% endif %}",
}


def cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_synthetic_harm_and_refusal_are_separate():
    g = torch.Generator().manual_seed(0)
    d, n = 64, 800
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=g))
    u, v = q[:, 0], q[:, 1]
    harm = (torch.rand(n, generator=g) < 0.5).float()
    jb = (torch.rand(n, generator=g) < 0.3).float()
    h_inst = harm[:, None] * 3 * u + torch.randn(n, d, generator=g)
    h_post = (harm * (1 - jb))[:, None] * 3 * v + torch.randn(n, d, generator=g)
    refused = (harm * (1 - jb)).bool()
    d_harm = direction_from_acts(h_inst[harm.bool()], h_inst[~harm.bool()], paired=False)
    d_ref = direction_from_acts(h_post[refused], h_post[~refused], paired=False)
    assert cos(d_harm, u) > 0.95 and cos(d_ref, v) > 0.95 and abs(cos(d_harm, d_ref)) < 0.2
    jail = (harm * jb).bool()
    on_ref = h_post[jail] @ torch.nn.functional.normalize(d_ref, dim=0)
    on_harm = h_inst[jail] @ torch.nn.functional.normalize(d_harm, dim=0)
    assert float(on_ref.mean()) < 0.5 and float(on_harm.mean()) > 2.0


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_instruction_positions_per_template(name):
    m = load_model("tiny-llama")  # byte-level tokenizer: one token per character
    m.tokenizer.chat_template = TEMPLATES[name]
    ins = ["Write a poem about rain.", "Hi there"]
    t_inst, t_post = instruction_positions(m, ins)
    for text, ti, tp in zip(ins, t_inst, t_post):
        full = m.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                               add_generation_prompt=True)
        ids = m.tokenizer(full, add_special_tokens=False)["input_ids"]
        assert m.tokenizer.decode(ids[ti]) == text[-1]
        assert m.tokenizer.decode(ids[:ti + 1]).endswith(text) and tp == len(ids) - 1 > ti


def test_directions_on_model_and_errors():
    """Spec sanity check on a model: harmful prompts write u at their instruction's last token (t_inst), prompts the
    model refuses write v at the last prompt token (t_post). One harmful prompt is not refused (a jailbreak) and one
    harmless prompt is, so grouping by behaviour differs from grouping by label."""
    m = load_model("tiny-llama")
    m.tokenizer.chat_template = TEMPLATES["chatml"]
    harmful, harmless = load_instructions("harmful")[:4], load_instructions("harmless")[:4]
    prompts = harmful + harmless
    refused = [True, True, True, False, False, False, False, True]
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(m.d_model, 2, generator=g))
    u, v = 5 * q[:, 0], 5 * q[:, 1]
    t_inst, t_post = instruction_positions(m, prompts)
    enc = m.tokenize(prompts, chat=True)
    real = enc["attention_mask"].long().cumsum(1) - 1
    at_inst = real == torch.tensor(t_inst)[:, None]
    at_post = real == torch.tensor(t_post)[:, None]
    harm_rows = torch.tensor([True] * 4 + [False] * 4)[:, None, None]
    ref_rows = torch.tensor(refused)[:, None, None]

    def plant(act, ctx):
        assert act.shape[:2] == at_inst.shape  # one batch of the 8 prompts
        return act + (at_inst[..., None] & harm_rows) * u + (at_post[..., None] & ref_rows) * v

    with m.intervene({"blocks.0.resid_post": plant}):
        res = harm_refusal_directions(m, harmful, harmless, layers=[1], refused=refused)
    s = "blocks.1.resid_pre"
    assert set(res.harm) == {s} and res.harm[s].position == "t_inst" and res.refusal[s].position == "t_post"
    d_harm, d_ref = res.harm[s].vector, res.refusal[s].vector
    assert cos(d_harm, u) > 0.95 and cos(d_ref, v) > 0.95 and abs(res.cos[s]) < 0.2
    assert res.cos[s] == pytest.approx(cos(d_harm, d_ref), abs=1e-6)
    # by behaviour, not label: the refused-minus-accepted mean moves the full planted v (by label only half of it)
    assert float(d_ref @ torch.nn.functional.normalize(v, dim=0)) == pytest.approx(5.0, rel=0.1)
    with pytest.raises(ValueError, match="needs both refused and accepted"):
        harm_refusal_directions(m, harmful, harmless, layers=[1], refused=[True] * 8)
    rate, _, texts = refusal_rate(m, harmful[:2], max_new_tokens=3)
    assert 0 <= rate <= 1 and len(texts) == 2
    r2, _ = steer_refusal(m, res.refusal["blocks.1.resid_pre"], 2.0, harmful[:2], max_new_tokens=3)
    assert 0 <= r2 <= 1
    with pytest.raises(ValueError, match="no chat template"):
        instruction_positions(load_model("tiny-gpt2"), ["x"])


def test_bundled_sets_and_judge():
    a, b = load_instructions("harmful"), load_instructions("harmless")
    assert len(a) == len(b) == 24 and not set(a) & set(b)
    assert is_refusal("I'm sorry, but I can't help with that.") and is_refusal("I cannot do that")
    assert not is_refusal("Sure! Here is a poem about rain.")
    with pytest.raises(ValueError, match="unknown instruction set"):
        load_instructions("evil")


def test_prompt_positions_spare_the_reply_tokens():
    """``prompt_positions`` (the prompt-only steering of the generation-free refusal measure) edits every position
    but the last n of each row, with left padding."""
    from actlab import load_model
    from actlab.core import Add
    from actlab.steer.refusal import prompt_positions

    m = load_model("tiny-llama")
    site = "blocks.0.resid_post"
    v = torch.ones(m.d_model)
    enc = m.tokenize(["abcdef", "xy"])                    # left padded
    plain = m.record(enc, sites=[site])[site]
    with m.intervene(prompt_positions({site: Add(v, alpha=1.0)}, 2)):
        got = m.record(enc, sites=[site])[site]
    diff = (got - plain).norm(dim=-1) > 1e-4
    real = enc["attention_mask"].bool()
    n_real = real.sum(1)
    for r in range(2):
        pos = real[r].nonzero().squeeze(1)
        assert diff[r, pos[:-2]].all() and not diff[r, pos[-2:]].any(), (r, diff[r], n_real[r])
