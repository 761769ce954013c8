"""Statistics fed from an ActivationStore equal the ones computed on the fly from the same contexts."""
import pytest
import torch

from actlab.stats.collect import StatsCollector, collect, collect_from_store
from actlab.stats.massive import LayerMassive
from actlab.stats.sparsity import SparsityStats


def _col(m):
    return StatsCollector(massive={"blocks.1.resid_post": LayerMassive(m.d_model)},
                          sparsity={"blocks.0.mlp_act": SparsityStats(128, 0.01)})


def test_store_matches_on_the_fly(tiny, tmp_path, one_thread):
    from actlab.store import HarvestConfig, harvest

    m = tiny("tiny-llama")
    data = tmp_path / "d.txt"
    data.write_text("Streaming statistics over a stored harvest must match the live pass. " * 30)
    sites = ["blocks.1.resid_post", "blocks.0.mlp_act"]
    store = harvest(m, HarvestConfig(data=str(data), sites=sites, out=str(tmp_path / "st"), tokens=256,
                                     context_length=32, store_dtype="fp32", progress=False))
    a = collect_from_store(store, _col(m), {s: s for s in sites}, batch_contexts=3)
    ids = store.tokens(list(range(len(store)))).view(-1, 32)
    b = _col(m)
    collect(m, ids, b, {s: s for s in sites}, batch_size=4, progress=False)
    assert a.n_tokens == b.n_tokens == len(store)
    sa, sb = a.massive["blocks.1.resid_post"].summary(), b.massive["blocks.1.resid_post"].summary()
    assert sa["top1_median"] == pytest.approx(sb["top1_median"], rel=1e-5)
    assert sa["top"][0]["pos"] == sb["top"][0]["pos"] and sa["top"][0]["channel"] == sb["top"][0]["channel"]
    assert a.sparsity["blocks.0.mlp_act"].mean == pytest.approx(b.sparsity["blocks.0.mlp_act"].mean, rel=1e-5)
    assert torch.equal(a.sparsity["blocks.0.mlp_act"].unit_counts, b.sparsity["blocks.0.mlp_act"].unit_counts)
