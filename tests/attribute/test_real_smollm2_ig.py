"""SmolLM2 (real model), issue 14 item 6: integrated gradients with the recommended settings (eos baseline, the
first token kept, adaptive quadrature) meets completeness within 2%; the old path (first token interpolated, 64
Gauss-Legendre nodes) missed it by 8% on this prompt (31% on others) and more steps did not help."""
import pytest

from actlab.attribute import contrastive_target, integrated_gradients

pytestmark = pytest.mark.real

PROMPT = "When Mary and John went out, John gave a book to"


def test_smollm2_ig_completeness(smollm2):
    m = smollm2
    tok = m.tokenizer
    mary, john = (tok(t, add_special_tokens=False)["input_ids"][0] for t in (" Mary", " John"))
    a = integrated_gradients(m, PROMPT, contrastive_target(mary, john), baseline="eos", batch_size=8)
    c = a.completeness
    assert a.f_x - a.f_baseline > 1.0, c  # a real effect to attribute
    assert a.meta["converged"] and c["relative_error"] < 0.02, (c, a.meta)
    assert float(a.attr[0].abs().max()) == 0  # the first token is part of the baseline
