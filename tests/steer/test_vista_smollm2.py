"""VISTA's context steering vector on a real with/without-context pair (SmolLM2; a text passage stands in for the
image context): steering the no-context run toward the context brings its next-token distribution closer to the
with-context one and raises the answer the context supports (spec §2 sanity check, on a real model)."""
import pytest
import torch

from actlab.steer.sla import ContextSteer, vsv_vectors


@pytest.mark.real
def test_vsv_moves_the_no_context_run_toward_the_context(smollm2):
    m = smollm2
    context, question = "My dog is called Biscuit. ", "My dog is called"
    answer = m.tokenizer(" Biscuit", add_special_tokens=False)["input_ids"][0]
    v = vsv_vectors(m, [context + question], [question])  # every block's mlp_out, last token
    assert len(v) == m.n_layers and all(float(x.norm()) > 0 for x in v.values())
    with torch.no_grad():
        p_ctx = m([context + question]).logits[0, -1].float().log_softmax(-1)
        p_no = m([question]).logits[0, -1].float().log_softmax(-1)
        with m.intervene({s: ContextSteer(x, lam=0.05) for s, x in v.items()}):
            p_st = m([question]).logits[0, -1].float().log_softmax(-1)

    def kl(p, q):
        return float((p.exp() * (p - q)).sum())

    # measured: KL 0.969 -> 0.698, p(" Biscuit") 0.0113 -> 0.0207 (0.226 with the context)
    assert kl(p_ctx, p_st) < 0.85 * kl(p_ctx, p_no)
    assert float(p_st[answer].exp()) > 1.5 * float(p_no[answer].exp())


@pytest.mark.real
def test_vsv_on_a_question_with_and_without_its_passage(smollm2):
    """The same question with and without a supporting passage (the text stand-in for the image): VSV at lam 0.05
    brings the no-passage run toward the passage run and raises the answer's probability and final-layer rank.
    Measured: KL 3.071 -> 2.254, p(" Mar") 0.0002 -> 0.0006 (0.347 with the passage), rank 168 -> 143."""
    from actlab.steer.sla import vsv_compare

    r = vsv_compare(smollm2, "Passage: Marbeck is the capital of Veloria.\n",
                    "Question: What is the capital of Veloria?\nAnswer:", 0.05, " Mar")
    assert r["kl_steered"] < 0.85 * r["kl_no_context"]
    assert r["p_steered"] > 2 * r["p_no_context"] and r["p_context"] > 0.1
    assert r["ranks_steered"][-1] < r["ranks_no_context"][-1]
    assert r["ranks_context"][-1] < 5 < r["ranks_no_context"][-1]
