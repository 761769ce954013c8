"""Row filters (exclude BOS / special, positions) and the CLI (harvest, store info)."""
import pytest
import torch

from actlab.cli import main
from actlab.store import ActivationStore, HarvestConfig, harvest


def test_exclude_bos_and_positions(tiny, corpus, tmp_path):
    m = tiny("tiny-llama")
    base = dict(data=str(corpus), sites=["blocks.0.resid_post"], store_dtype="fp32", context_length=32, progress=False,
                tokens=3000)
    full = harvest(m, HarvestConfig(out=str(tmp_path / "all"), **base))
    bos = m.tokenizer.bos_token_id
    assert (full.tokens(slice(None)) == bos).sum() > 10
    nob = harvest(m, HarvestConfig(out=str(tmp_path / "nobos"), exclude_bos=True, **base))
    assert len(nob) == 3000 and not (nob.tokens(slice(None)) == bos).any()
    # the non-BOS rows are the same rows in the same order (same contexts)
    keep = full.tokens(slice(None)) != bos
    k = int(keep.sum())
    assert torch.equal(nob.read("blocks.0.resid_post", slice(0, k)), full.read("blocks.0.resid_post", slice(None))[keep])
    sp = harvest(m, HarvestConfig(out=str(tmp_path / "special"), exclude_special=True, **base))
    assert not torch.isin(sp.tokens(slice(None)), torch.tensor(m.tokenizer.all_special_ids)).any()
    skip0 = harvest(m, HarvestConfig(out=str(tmp_path / "p"), positions="1:", **base))
    # context position 0 never stored: every 31 rows come from one context
    assert torch.equal(skip0.read("blocks.0.resid_post", slice(0, 31)), full.read("blocks.0.resid_post", slice(1, 32)))
    few = harvest(m, HarvestConfig(out=str(tmp_path / "few"), positions="0,5", **base))
    assert torch.equal(few.read("blocks.0.resid_post", [2, 3]), full.read("blocks.0.resid_post", [32, 37]))


def test_cli_harvest_and_info(corpus, tmp_path, capsys):
    out = tmp_path / "s"
    main(["harvest", "tiny-gpt2", "--data", str(corpus), "--sites", "blocks.1.mlp_act,final_norm", "--tokens", "1000",
          "--out", str(out), "--context-length", "64", "--noprogress", "--exclude-bos"])
    assert "1000 rows" in capsys.readouterr().out
    st = ActivationStore(out)
    assert st.dtype == torch.bfloat16 and st.dims == {"blocks.1.mlp_act": 256, "final_norm": 64}
    main(["store", "info", str(out), "--verify"])
    o = capsys.readouterr().out
    assert "tiny-gpt2" in o and "blocks.1.mlp_act  d=256" in o and "all checksums match" in o
    main(["store", "info", str(out), "--json"])
    assert '"format": "actlab-activation-store"' in capsys.readouterr().out


def test_cli_dtype_is_the_model_dtype(corpus, tmp_path, capsys):
    """Issue 13: harvest's --dtype meant the storage dtype, the opposite of every other --dtype."""
    from actlab.store import HarvestConfig

    out = tmp_path / "s"
    main(["harvest", "tiny-llama", "--data", str(corpus), "--sites", "blocks.0.resid_post", "--tokens", "64",
          "--out", str(out), "--context-length", "32", "--noprogress", "--dtype", "fp16", "--store-dtype", "fp32"])
    st = ActivationStore(out)
    assert st.dtype == torch.float32 and st.manifest["harvest"]["model_dtype"] == "fp16"
    from actlab import load_model

    m = load_model("tiny-llama", dtype="fp16")
    ids = st.tokens(slice(0, 32)).long()[None]
    torch.testing.assert_close(st.read("blocks.0.resid_post", slice(0, 32)),
                               m.record(ids, ["blocks.0.resid_post"])["blocks.0.resid_post"][0].float())
    # the old Python name still works, and a contradiction is refused
    assert HarvestConfig(data="d", sites="a,b", out="o", dtype="fp16").store_dtype == "fp16"
    with pytest.raises(ValueError, match="give store_dtype only"):
        HarvestConfig(data="d", sites=["a"], out="o", dtype="fp16", store_dtype="fp32")
    assert HarvestConfig(data="d", sites=["a,b", "c"], out="o").sites == ["a", "b", "c"]


def test_harvest_data_demo(tiny, tmp_path):
    from actlab.data import demo_corpus

    st = harvest(tiny("tiny-llama"), HarvestConfig(data="demo", sites=["embed"], out=str(tmp_path / "d"), tokens=64,
                                                   context_length=32, progress=False))
    assert st.manifest["harvest"]["data"] == str(demo_corpus().resolve()) and len(st) == 64
