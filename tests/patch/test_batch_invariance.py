"""Issue 14 item 1: a pair's patching numbers do not depend on its batch mates (left padding must not shift the
learned positions of GPT-2-style models)."""
import pytest
import torch

from actlab.patch import LogitDiff, activation_patch, attribution_patch, path_patch

CLEAN, CORRUPT = "the cat sat on", "the bat sat on"
LONG_CLEAN, LONG_CORRUPT = "a much longer prompt about the cat", "a much longer prompt about the bat"


def _metric(m):
    return LogitDiff(m.tokenizer("x")["input_ids"][-1], m.tokenizer("y")["input_ids"][-1])


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("method", [activation_patch, attribution_patch])
def test_grid_pair_alone_equals_pair_beside_a_longer_one(tiny, name, method):
    m = tiny(name)
    met = _metric(m)
    sites = ["blocks.0.resid_pre", "blocks.1.attn_out", "blocks.1.resid_post"]
    alone = method(m, CLEAN, CORRUPT, met, sites)
    both = method(m, [CLEAN, LONG_CLEAN], [CORRUPT, LONG_CORRUPT], met, sites)
    n = alone.values.shape[1]
    assert both.values.shape[1] > n  # the short pair is left-padded in the shared sweep
    assert both.clean != pytest.approx(alone.clean)  # (the means include the long pair; compare pair 0 itself)
    torch.testing.assert_close(both.per_pair[:, -n:, 0], alone.per_pair[..., 0], atol=1e-4, rtol=1e-4)
    # padded columns of the short pair hold identical (pad) activations in both runs: a patch there is a no-op
    pad_cells = both.per_pair[:, :-n, 0]
    base0 = alone.per_pair[0, 0, 0] if method is attribution_patch else None
    ref = torch.full_like(pad_cells, float(alone.corrupt))
    torch.testing.assert_close(pad_cells, ref, atol=1e-4, rtol=1e-4)
    assert base0 is None or float(base0) == pytest.approx(alone.corrupt, abs=1e-4)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_path_patch_pair_alone_equals_pair_beside_a_longer_one(tiny, name):
    m = tiny(name)
    met = _metric(m)

    def score_row0(out):
        logits = out.logits[:1, -1]
        return met(logits, torch.zeros(1, dtype=torch.long))

    kw = dict(sender="blocks.0.attn.z#1", receivers=["blocks.1.resid_post"], score=score_row0)
    alone = path_patch(m, [CLEAN], [CORRUPT], **kw)
    both = path_patch(m, [CLEAN, LONG_CLEAN], [CORRUPT, LONG_CORRUPT], **kw)
    assert abs(alone.source - alone.base) > 1e-4
    for f in ("base", "source", "patched"):
        assert getattr(both, f) == pytest.approx(getattr(alone, f), abs=2e-5), f
