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
