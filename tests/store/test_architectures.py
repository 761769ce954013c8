"""harvest on every tiny architecture; issue 14 item 1 (store part): a harvested context's rows equal that context
recorded alone (its batch mates, batch size and the shard it lands in change nothing), on GPT-2 (learned absolute
positions) and every other architecture."""
import pytest
import torch

from actlab.models.tiny import TINY

from actlab.data import iter_contexts, load_texts
from actlab.store import HarvestConfig, harvest

SITES = ["blocks.0.resid_post", "blocks.1.mlp_out"]


@pytest.mark.parametrize("name", sorted(TINY))
def test_harvested_rows_equal_context_alone(tiny, corpus, tmp_path, name):
    m = tiny(name)
    L = 24
    st = harvest(m, HarvestConfig(data=str(corpus), sites=SITES, out=str(tmp_path / "o"), tokens=10 * L,
                                  store_dtype="fp32", context_length=L, batch_size=3, shard_rows=70, progress=False))
    ctxs = [c[0] for c, _ in zip(iter_contexts(m.tokenizer, load_texts(corpus), L, 0), range(10))]
    for i in (0, 4, 9):                                  # first, middle of a batch, last (a batch of one)
        rows = list(range(i * L, (i + 1) * L))
        assert torch.equal(st.tokens(rows).long(), ctxs[i])
        alone = m.record(ctxs[i][None], SITES)
        assert st.manifest["model"]["family"] == m.family
        for s in SITES:
            torch.testing.assert_close(st.read(s, rows), alone[s][0], rtol=1e-5, atol=1e-6)
