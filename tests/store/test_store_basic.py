"""Round trip of a harvest against model.record, reader API, CLI info."""

import pytest
import torch

from actlab.data import load_texts, pack_contexts
from actlab.store import ActivationStore, HarvestConfig, StoreError, harvest

SITES = ["blocks.0.resid_post", "blocks.1.attn.z"]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_round_trip_equals_record(tiny, corpus, tmp_path, dtype):
    m = tiny("tiny-llama")
    L, bs = 32, 8
    st = harvest(m, HarvestConfig(data=str(corpus), sites=SITES, out=str(tmp_path / "s"), tokens=5000, store_dtype=dtype,
                                  context_length=L, batch_size=bs, shard_rows=700, progress=False))
    assert len(st) == 5000 and st.complete and st.dims == {s: 64 for s in SITES}
    assert st.site_shapes["blocks.1.attn.z"] == [4, 16] and st.context_length == L
    docs = load_texts(corpus)
    pk = pack_contexts(m.tokenizer, docs, L, seed=0)
    n_ctx = -(-5000 // L)
    ids = pk.input_ids[:n_ctx]
    ref = {s: [] for s in SITES}
    for i in range(0, n_ctx, bs):
        acts = m.record(ids[i:i + bs], SITES)
        for s in SITES:
            ref[s].append(acts[s].reshape(-1, 64))
    for s in SITES:
        r = torch.cat(ref[s])[:5000]
        got = st.read(s, slice(None))
        if dtype == "fp32":
            assert got.dtype == torch.float32 and torch.equal(got, r)
        else:
            assert got.dtype == torch.bfloat16
            assert torch.allclose(got.float(), r, rtol=2 ** -8, atol=1e-6)
            assert torch.equal(got, r.to(torch.bfloat16))
    assert torch.equal(st.tokens(slice(None)), ids.reshape(-1)[:5000])
    doc, pos = st.doc_pos(slice(None))
    assert torch.equal(doc, pk.doc_ids.reshape(-1)[:5000]) and torch.equal(pos, pk.positions.reshape(-1)[:5000])
    # (doc, pos) map back to the source text: re-tokenize the document and look the token up
    sample = torch.randperm(5000, generator=torch.Generator().manual_seed(1))[:300]
    toks = st.tokens(sample)
    d, p = st.doc_pos(sample)
    for t, dd, pp in zip(toks.tolist(), d.tolist(), p.tolist()):
        full = [m.tokenizer.bos_token_id] + m.tokenizer(docs[dd], add_special_tokens=False)["input_ids"]
        assert full[pp] == t
    # random access with a LongTensor and a list, across shards and out of order
    idx = torch.tensor([4999, 0, 701, 700, 699, 2500])
    assert torch.equal(st.read(SITES[0], idx), st.read(SITES[0], slice(None))[idx])
    assert torch.equal(st.read(SITES[0], idx.tolist()), st.read(SITES[0], idx))
    assert st.verify() == []


def test_reader_errors(tmp_path):
    with pytest.raises(StoreError, match="manifest.json is missing"):
        ActivationStore(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="corrupt"):
        ActivationStore(tmp_path)
    with pytest.raises(StoreError, match="does not exist"):
        ActivationStore(tmp_path / "nope")


def test_harvest_stops_after_last_site(tiny, corpus, tmp_path):
    """Layers after the last requested site never run during a harvest (the forward pass stops early)."""
    m = tiny("tiny-llama")
    calls = {"l0": 0, "l1": 0}
    # pre-hooks count the layers entered (a forward hook on layer 0 runs after the site handler stops the pass)
    h0 = m.module.model.layers[0].register_forward_pre_hook(lambda *a: calls.__setitem__("l0", calls["l0"] + 1))
    h1 = m.module.model.layers[1].register_forward_pre_hook(lambda *a: calls.__setitem__("l1", calls["l1"] + 1))
    try:
        harvest(m, HarvestConfig(data=str(corpus), sites=["blocks.0.resid_post"], out=str(tmp_path / "s"),
                                 tokens=640, context_length=32, batch_size=4, progress=False,
                                 estimate=False))   # the estimate's calibration forwards are not the harvest's
    finally:
        h0.remove()
        h1.remove()
    assert calls["l0"] == 5 and calls["l1"] == 0


def test_read_range_pieces_and_early_end(tmp_path):
    """read_range yields the file's bytes in order in bounded pieces (a short dest is reused) and names the shard
    when the file ends early."""
    from actlab.store.format import StoreCorruptError, read_range

    data = bytes(range(256)) * 40
    p = tmp_path / "s.safetensors"
    p.write_bytes(data)
    got = [bytes(x) for x in read_range(p, 100, 9000, memoryview(bytearray(4096)), "s.safetensors", piece=1000)]
    assert b"".join(got) == data[100:9100] and max(map(len, got)) <= 1000
    whole = bytearray(500)
    assert [len(x) for x in read_range(p, 0, 500, memoryview(whole), "s")] == [500] and bytes(whole) == data[:500]
    with pytest.raises(StoreCorruptError, match="shard s.safetensors: unexpected end"):
        list(read_range(p, len(data) - 10, 20, memoryview(bytearray(64)), "s.safetensors"))
