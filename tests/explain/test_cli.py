"""`actlab explain cache|examples|show` end to end on a tiny model's store (in-process), and errors (exit 2)."""
from __future__ import annotations

import json

import pytest
import torch

from actlab import load_model
from actlab.artifact import save_tensors
from actlab.cli import main
from actlab.dictionary import DictConfig, build
from actlab.explain import LatentCache
from actlab.store import HarvestConfig, harvest

SITE = "blocks.1.resid_post"


def _fails(argv, capsys, match):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert match in capsys.readouterr().err


@pytest.fixture(scope="module")
def store_and_sae(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    corpus = tmp / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"doc {i}: the apple and the pear, {i * 7} café"}) + "\n"
                              for i in range(60)))
    m = load_model("tiny-llama")
    st = harvest(m, HarvestConfig(data=str(corpus), sites=[SITE, "blocks.0.mlp_act"], out=str(tmp / "store"),
                                  tokens=1500, context_length=32, store_dtype="fp32", progress=False))
    sae = build(DictConfig(arch="topk", d_in=64, d_sae=128, k=8, site=SITE, model="tiny-llama"), seed=0)
    sae.save(tmp / "sae")
    return tmp, st, sae


def test_cache_examples_show(store_and_sae, capsys):
    tmp, st, sae = store_and_sae
    out = tmp / "cache"
    main(["explain", "cache", "--store", str(tmp / "store"), "--dictionary", str(tmp / "sae"), "--out", str(out),
          "--batch-rows", "256", "--shard-entries", "3000", "--progress", "false"])
    assert "cached 128 latents over 1500 tokens" in capsys.readouterr().out
    c = LatentCache(out)
    assert torch.equal(c.dense(7), sae.encode(st.read(SITE, slice(None), dtype=torch.float32))[:, 7])
    doc, pos = st.doc_pos(slice(None))
    assert torch.equal(c.row_table("tokens"), st.tokens(slice(None)))
    assert torch.equal(c.row_table("doc"), doc) and torch.equal(c.row_table("pos"), pos)
    j = int(c.count.argmax())
    main(["explain", "examples", "--cache", str(out), "--latent", f"{j},3", "--n-train", "4", "--n-test", "3",
          "--n-non-activating", "2", "--out", str(tmp / "ex.json")])
    ex = json.loads((tmp / "ex.json").read_text())
    assert set(ex["latents"]) == {str(j), "3"} and len(ex["latents"][str(j)]["train"]) == 4
    assert "<<" in ex["latents"][str(j)]["train"][0]["text"]
    main(["explain", "examples", "--cache", str(out), "--latent", str(j), "--negatives", "neighbour",
          "--n-non-activating", "3", "--n-neighbours", "20", "--ctx-len", "3", "--after", "1", "--out", str(tmp / "nb.json")])
    nb = json.loads((tmp / "nb.json").read_text())["latents"][str(j)]["non_activating"]
    assert nb and all(x["kind"] == "neighbour" and not any(x["acts"]) for x in nb)
    main(["explain", "show", "--cache", str(out), "--latent", str(j), "--model", "tiny-llama", "--no-color"])
    card = capsys.readouterr().out
    assert f"latent {j}" in card and "promotes" in card and "density" in card and card.count("<<") >= 5
    # a model on texts instead of a store
    main(["explain", "cache", "--model", "tiny-llama", "--data", str(tmp / "c.jsonl"), "--max-texts", "6",
          "--dictionary", str(tmp / "sae"), "--out", str(tmp / "texts"), "--progress", "false"])
    assert "cached 128 latents" in capsys.readouterr().out
    assert LatentCache(tmp / "texts").rows_source["n_texts"] == 6
    # neurons and directions
    main(["explain", "cache", "--store", str(tmp / "store"), "--neurons", "--site", "blocks.0.mlp_act",
          "--out", str(tmp / "neur"), "--progress", "false"])
    assert "cached 128 latents" in capsys.readouterr().out
    save_tensors(tmp / "dirs.safetensors", {"d": torch.randn(3, 64)})
    main(["explain", "cache", "--store", str(tmp / "store"), "--directions", str(tmp / "dirs.safetensors"),
          "--site", SITE, "--out", str(tmp / "dirs"), "--progress", "false"])
    main(["explain", "show", "--cache", str(tmp / "dirs"), "--latent", "0", "--no-effects", "--no-color"])
    assert "nearest" in capsys.readouterr().out


def test_errors(store_and_sae, capsys):
    tmp, _, _ = store_and_sae
    _fails(["explain", "cache", "--store", str(tmp / "store"), "--out", str(tmp / "e1")], capsys,
           "exactly one latent source")
    _fails(["explain", "cache", "--store", str(tmp / "store"), "--neurons", "--site", SITE, "--out",
            str(tmp / "e2")], capsys, "mlp_act")
    _fails(["explain", "cache", "--out", str(tmp / "e3"), "--dictionary", str(tmp / "sae")], capsys,
           "either a store")
    _fails(["explain", "show", "--cache", str(tmp / "nope"), "--latent", "0"], capsys, "nope")
    _fails(["explain", "examples", "--cache", str(tmp / "cache"), "--latent", "0", "--train-type", "best"], capsys,
           "train_type")
