"""Every public entry point of actlab.lens on every tiny architecture: causal LMs run, BERT (no unembedding) gets
Unsupported naming it from the read-out methods; DFA needs no read-out and runs on BERT too (z = A v holds)."""
import pytest
import torch

from actlab.dictionary import DictConfig, build
from actlab.lens import TunedLens, direct_feature_attribution, direct_logit_attribution, logit_lens
from actlab.models import Unsupported
from actlab.models.tiny import TINY

TEXTS = ["hello there", "a b"]


@pytest.mark.parametrize("name", sorted(TINY))
def test_entry_points(tiny, name):
    m = tiny(name)
    sae = build(DictConfig(arch="relu", d_in=m.adapter.n_heads * m.adapter.d_head, d_sae=8, site="blocks.1.attn.z"))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=torch.Generator().manual_seed(0))
    r = direct_feature_attribution(m, sae, TEXTS)
    torch.testing.assert_close(r.total, r.pre, atol=1e-5, rtol=0)
    if not m.adapter.is_causal_lm:
        for call in (lambda: logit_lens(m, TEXTS), lambda: direct_logit_attribution(m, TEXTS, 5),
                     lambda: TunedLens.for_model(m)):
            with pytest.raises(Unsupported, match=f"{m.adapter.name}: no unembedding"):
                call()
        return
    lr = logit_lens(m, TEXTS)
    assert lr.kl[-1][lr.mask].abs().max() < 1e-5
    d = direct_logit_attribution(m, TEXTS, 5, 6)
    torch.testing.assert_close(d.total, d.logit, atol=1e-4, rtol=0)
    assert TunedLens.for_model(m).sites == [f"blocks.{i}.resid_post" for i in range(m.n_layers)]
