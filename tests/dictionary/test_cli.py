"""End to end on a tiny store: actlab sae train / eval / info / top / export, transcoder train, bad inputs."""
import json

import pytest

from actlab.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny):
    from actlab.store import HarvestConfig, harvest
    root = tmp_path_factory.mktemp("sae_cli")
    data = root / "texts.txt"
    data.write_text("\n".join(f"Line {i}: the {w} sat near {i % 7} stones and {w}s." for i in range(80)
                              for w in ("cat", "dog")))
    m = tiny("tiny-llama")
    harvest(m, HarvestConfig(data=str(data), sites=["blocks.1.resid_post", "blocks.0.mlp_in", "blocks.0.mlp_out"],
                             out=str(root / "store"), tokens=6000, context_length=32, dtype="fp32",
                             progress=False))
    return root


def test_sae_train_eval_info_top_export(store, capsys):
    out = store / "sae"
    main(["sae", "train", "--store", str(store / "store"), "--site", "blocks.1.resid_post", "--k", "8",
          "--expansion", "4", "--tokens", "20000", "--batch-size", "512", "--lr", "3e-3", "--warmup-steps", "5",
          "--out", str(out), "--checkpoint-every", "10"])
    assert (out / "dictionary.safetensors").exists() and (out / "metrics.jsonl").exists()
    main(["sae", "eval", str(out), "--store", str(store / "store"), "--tokens", "4000", "--png",
          str(store / "density.png")])
    res = json.loads(_json_tail(capsys.readouterr().out))
    assert res["fvu"] < 0.5 and 0 < res["l0"] <= 8 and res["tokens"] >= 4000
    assert (store / "density.png").exists()
    main(["sae", "info", str(out)])
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "topk" and info["site"] == "blocks.1.resid_post" and info["train"]["tokens"] == 19968
    main(["sae", "top", str(out), "--store", str(store / "store"), "--n-features", "3", "--top", "2",
          "--no-color"])
    text = capsys.readouterr().out
    assert text.count("feature ") == 3 and "[[" in text
    main(["sae", "export", str(out), "--to", "saelens", "--out", str(store / "exp")])
    assert (store / "exp" / "sae_weights.safetensors").exists()


def _json_tail(out: str) -> str:
    return out[out.index("{"):]


def test_transcoder_train(store):
    out = store / "tc"
    main(["transcoder", "train", "--store", str(store / "store"), "--site", "blocks.0.mlp_in", "--site-out",
          "blocks.0.mlp_out", "--k", "8", "--expansion", "4", "--tokens", "10240", "--batch-size", "512",
          "--out", str(out)])
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["d_out"] == 64 and cfg["site_out"] == "blocks.0.mlp_out"


def test_several_sites_one_sae_each(store):
    out = store / "multi"
    main(["sae", "train", "--store", str(store / "store"), "--site", "blocks.1.resid_post,blocks.0.mlp_out",
          "--k", "4", "--expansion", "2", "--tokens", "2048", "--batch-size", "512", "--out", str(out)])
    for site in ("blocks.1.resid_post", "blocks.0.mlp_out"):
        assert json.loads((out / site / "cfg.json").read_text())["site"] == site


def test_missing_site_error(store):
    with pytest.raises(SystemExit, match="has no site 'blocks.5.resid_post'"):
        main(["sae", "train", "--store", str(store / "store"), "--site", "blocks.5.resid_post",
              "--out", str(store / "x")])
