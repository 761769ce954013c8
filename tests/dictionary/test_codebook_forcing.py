"""Code forcing during generate(): with k=1 and a code forced at every position, the site holds exactly that code's
vector at prefill and every decode step (so generation equals replacing the site by it); forcing at the last
position only changes each forward call's last token and leaves the others snapped to their own codes."""
import pytest
import torch

from actlab import load_model
from actlab.core import Replace
from actlab.dictionary.codebook import CodebookLayer
from actlab.dictionary.codebook_model import forcing, splice

SITE = "blocks.0.resid_post"


def test_forcing_every_position_equals_replacing_by_the_code():
    m = load_model("tiny-llama")
    layer = CodebookLayer(m.d_model, 16, k=1, seed=0)
    with forcing(m, SITE, layer, 5, where="all"):
        got = m.generate(["hello", "ab"], max_new_tokens=4, return_ids=True)
    with m.intervene({SITE: Replace(layer.codes[5].detach())}):
        want = m.generate(["hello", "ab"], max_new_tokens=4, return_ids=True)
    assert torch.equal(got, want)
    with m.intervene({SITE: splice(layer)}):
        plain = m.generate(["hello", "ab"], max_new_tokens=4, return_ids=True)
    assert not torch.equal(plain, got)  # the forced code changes the continuation


def test_forcing_last_position_only():
    m = load_model("tiny-llama")
    layer = CodebookLayer(m.d_model, 16, k=1, seed=0)
    seen = []
    edit = splice(layer, 7, where="last")

    def spy(act, ctx):
        out = edit(act, ctx)
        snapped = layer.codes[layer.select(act)[..., 0]]
        seen.append((out.detach(), snapped.detach(), act.shape[1]))
        return out

    with m.intervene({SITE: spy}):
        m.generate(["hello"], max_new_tokens=3)
    assert [n for _, _, n in seen] == [6, 1, 1]  # prefill (<bos>hello), then one token per decode step
    for out, snapped, _ in seen:
        assert torch.allclose(out[:, -1], layer.codes[7].detach().expand_as(out[:, -1]))
        assert torch.allclose(out[:, :-1], snapped[:, :-1])
    with pytest.raises(IndexError, match="out of range"):
        splice(layer, 16)
    with pytest.raises(ValueError, match="where="):
        splice(layer, 1, where="first")
