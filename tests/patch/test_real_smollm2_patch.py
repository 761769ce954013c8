"""SmolLM2 (real model): an IOI-style pair; whole-residual patches restore the clean metric, attribution agrees."""
import pytest
import torch

from actlab.patch import LogitDiff, activation_patch, attribution_patch

pytestmark = pytest.mark.real

CLEAN = "When Mary and John went out, John gave a book to"
CORRUPT = "When Mary and John went out, Mary gave a book to"


def test_smollm2_ioi_patching(smollm2):
    m = smollm2
    tok = m.tokenizer
    mary, john = (tok(t, add_special_tokens=False)["input_ids"][0] for t in (" Mary", " John"))
    met = LogitDiff(mary, john)
    sites = ["blocks.0.resid_pre", "blocks.15.resid_pre", "blocks.29.resid_post"]
    r = activation_patch(m, CLEAN, CORRUPT, met, sites, positions="all")
    assert r.clean > r.corrupt + 1.0  # the model prefers Mary after "John gave"
    torch.testing.assert_close(r.values, torch.full_like(r.values, r.clean), atol=1e-3, rtol=1e-4)
    # per position at layer 0: only the column where the prompts differ carries the effect
    r0 = activation_patch(m, CLEAN, CORRUPT, met, "blocks.0.resid_pre")
    col = int((m.tokenize(CLEAN)["input_ids"] != m.tokenize(CORRUPT)["input_ids"]).nonzero()[0, 1])
    assert r0.normalized[0, col].item() == pytest.approx(1.0, abs=1e-3)
    a0 = attribution_patch(m, CLEAN, CORRUPT, met, "blocks.0.resid_pre")
    assert int(a0.normalized[0].abs().argmax()) == col
