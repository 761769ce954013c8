"""End to end on a tiny store: actlab sae train / eval / info / top / export, transcoder train, bad inputs."""
import json
import re

import pytest
import torch

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


def _fails(args, match, capsys):
    """The command fails with a message matching ``match``: raised, or printed as ``error: ...`` with exit 2."""
    try:
        main(args)
    except SystemExit as e:
        text = capsys.readouterr().err + (e.code if isinstance(e.code, str) else "")
        assert e.code != 0 and re.search(match, text), text
        return
    except Exception as e:  # noqa: BLE001 - before the top-level error policy lands, errors propagate
        assert re.search(match, str(e)), str(e)
        return
    pytest.fail(f"{args} did not fail")


def _json_tail(out: str) -> str:
    return out[out.index("{"):]


def test_transcoder_train(store, capsys):
    """The trained transcoder predicts the MLP output far better than the mean (held-out store rows) at L0 <= k,
    and replacing the MLP by it in the model keeps most of the loss that zero-ablating the MLP loses."""
    out = store / "tc"
    main(["transcoder", "train", "--store", str(store / "store"), "--site", "blocks.0.mlp_in", "--site-out",
          "blocks.0.mlp_out", "--k", "8", "--expansion", "4", "--tokens", "40960", "--batch-size", "512",
          "--lr", "3e-3", "--warmup-steps", "5", "--out", str(out)])
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["d_out"] == 64 and cfg["site_out"] == "blocks.0.mlp_out" and cfg["arch"] == "topk"
    capsys.readouterr()
    main(["transcoder", "eval", str(out), "--store", str(store / "store"), "--tokens", "4000",
          "--model", "tiny-llama", "--texts", str(store / "texts.txt"), "--max-texts", "8"])
    res = json.loads(_json_tail(capsys.readouterr().out))
    assert res["fvu"] < 0.35 and 0 < res["l0"] <= 8, res
    assert res["splice_ce_zero"] > res["splice_ce_clean"] and res["splice_loss_recovered"] > 0.5, res


def test_on_the_fly_uses_the_sites_own_width(store):
    """mlp_act has d_mlp (128 on tiny-llama), not d_model (64)."""
    out = store / "act"
    main(["sae", "train", "--model", "tiny-llama", "--data", str(store / "texts.txt"), "--site", "blocks.0.mlp_act",
          "--k", "4", "--expansion", "2", "--tokens", "2048", "--batch-size", "256", "--context-length", "32",
          "--out", str(out)])
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["d_in"] == 128 and cfg["d_sae"] == 256


def test_gsae_on_the_fly_uses_gradients(store, capsys):
    """--arch gsae requests the downstream gradient: with beta 0 it is exactly TopK, with beta > 0 it trains a
    different dictionary from the same data and seed; a store (no gradients) is refused."""
    from actlab.dictionary import build, load

    def run(name, *extra):
        main(["sae", "train", "--model", "tiny-llama", "--data", str(store / "texts.txt"), "--site",
              "blocks.1.resid_mid", "--k", "4", "--expansion", "2", "--tokens", "3072", "--batch-size", "256",
              "--context-length", "32", "--lr", "3e-3", "--out", str(store / name), *extra])
        return load(store / name)
    topk = run("g_topk")
    zero = run("g_zero", "--arch", "gsae", "--gsae-beta", "0")
    aware = run("g_aware", "--arch", "gsae", "--gsae-beta", "4")
    assert torch.equal(topk.W_dec, zero.W_dec)
    init = build(topk.cfg).W_dec       # same seeded initialisation for every run; compare how far each moved
    moved = [m.W_dec.detach() * m.cfg.train["scale_out"] - init for m in (topk, aware)]
    assert float((moved[0] - moved[1]).norm()) > 0.3 * float(moved[0].norm())
    assert aware.cfg.arch == "gsae" and aware.cfg.gsae_beta == 4
    _fails(["sae", "train", "--store", str(store / "store"), "--site", "blocks.1.resid_post", "--arch", "gsae",
            "--out", str(store / "g_store")], "needs the downstream-loss gradient", capsys)


def test_finished_folder_needs_overwrite(store, capsys):
    out = store / "fin"
    args = ["sae", "train", "--store", str(store / "store"), "--site", "blocks.1.resid_post", "--k", "4",
            "--expansion", "2", "--tokens", "1024", "--batch-size", "512", "--out", str(out)]
    main(args)
    before = (out / "dictionary.safetensors").read_bytes()
    _fails(args + ["--seed", "3"], "already holds a finished dictionary", capsys)
    assert (out / "dictionary.safetensors").read_bytes() == before
    main(args + ["--seed", "3", "--overwrite"])
    assert (out / "dictionary.safetensors").read_bytes() != before
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 2


def test_several_sites_one_sae_each(store):
    out = store / "multi"
    main(["sae", "train", "--store", str(store / "store"), "--site", "blocks.1.resid_post,blocks.0.mlp_out",
          "--k", "4", "--expansion", "2", "--tokens", "2048", "--batch-size", "512", "--out", str(out)])
    for site in ("blocks.1.resid_post", "blocks.0.mlp_out"):
        assert json.loads((out / site / "cfg.json").read_text())["site"] == site


def test_missing_site_error(store, capsys):
    _fails(["sae", "train", "--store", str(store / "store"), "--site", "blocks.5.resid_post",
            "--out", str(store / "x")], "has no site 'blocks.5.resid_post'", capsys)


def test_info_of_a_saelens_folder_with_site_override(capsys):
    from pathlib import Path
    folder = Path(__file__).parent / "fixtures" / "saelens" / "topk"
    main(["sae", "info", str(folder)])
    assert json.loads(capsys.readouterr().out)["site"] == "blocks.1.resid_post"   # from blocks.1.hook_resid_post
    main(["sae", "info", str(folder), "--site", "blocks.0.resid_post"])
    assert json.loads(capsys.readouterr().out)["site"] == "blocks.0.resid_post"


def test_device_flag_sets_the_train_device(store, monkeypatch):
    """--device (the model group's flag) is where the SAE trains too, unless --train-device says otherwise."""
    import actlab.dictionary as D
    seen = []

    def fake(sites, dict_kw, tc, **kw):
        seen.append(tc.train_device)
        return []
    monkeypatch.setattr(D, "train_sites", fake)
    base = ["sae", "train", "--store", str(store / "store"), "--site", "blocks.1.resid_post", "--out",
            str(store / "dev")]
    main(base + ["--device", "cuda:3"])
    main(base + ["--device", "cuda:3", "--train-device", "cuda:1"])
    main(base)
    assert seen == ["cuda:3", "cuda:1", "cpu"]


def test_package_exports_codebook_and_snmf_names():
    import actlab.dictionary as D
    from actlab.dictionary import codebook_model, snmf_model
    assert D.train_joint is codebook_model.train_joint and D.CodebookTrainConfig is codebook_model.CodebookTrainConfig
    assert D.snmf_fit is snmf_model.fit and D.SNMFFeatures is snmf_model.SNMFFeatures
    assert set(D.__all__) <= set(dir(D))
