"""CLI: actlab patch activation|attribution|path|subspace and actlab attribute ig|grad end to end on tiny models."""
import json
import re

import pytest

from actlab.cli import main
from actlab.patch import PatchResult

def _fails(argv, capsys, match):
    """The command exits with an error whose text (SystemExit message or stderr) matches ``match``."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    text = f"{e.value.code} {capsys.readouterr().err}"
    assert e.value.code not in (0, None) and re.search(match, text), text


PAIR = ["--clean", "the cat sat on", "--corrupt", "the bat sat on", "--correct", "x", "--incorrect", "y"]


def test_patch_cli_verbs(tmp_path, capsys):
    main(["patch", "activation", "tiny-llama", *PAIR, "--out", str(tmp_path / "act")])
    r = PatchResult.load(tmp_path / "act")
    assert r.dims == ("site", "position") and (tmp_path / "act" / "heatmap.png").exists()
    assert abs(r.normalized[0, 5].item() - 1) < 1e-4
    main(["patch", "attribution", "tiny-llama", *PAIR, "--sites", "blocks.*.attn.z", "--heads", "--positions", "all",
          "--out", str(tmp_path / "attr")])
    assert PatchResult.load(tmp_path / "attr").values.shape == (2, 1, 4)
    main(["patch", "path", "tiny-gpt2", *PAIR, "--sender", "blocks.0.attn.z#1", "--receiver", "blocks.1.resid_post"])
    assert "blocks.0.attn.z#1: metric" in capsys.readouterr().out
    main(["patch", "subspace", "tiny-llama", *PAIR, "--site", "blocks.0.mlp_act", "--das", "1", "--steps", "3",
          "--out", str(tmp_path / "sub")])
    eff = json.loads((tmp_path / "sub" / "effect.json").read_text())
    assert set(eff["illusion_check"]) >= {"effect_row", "effect_null", "flags"}
    _fails(["patch", "activation", "tiny-llama", "--clean", "the cat", "--corrupt", "the cats", "--correct", "x",
            "--incorrect", "y"], capsys, "tokenizes to 8 tokens")


def test_attribute_cli(tmp_path, capsys):
    main(["attribute", "ig", "tiny-llama", "--text", "the cat sat on", "--target", "x", "--contrast", "y", "--steps",
          "8", "--out", str(tmp_path / "ig")])
    out = capsys.readouterr().out
    assert "completeness: sum of attributions" in out and "gradient evaluations" in out and "\x1b[48;5;" in out
    js = json.loads((tmp_path / "ig" / "attribution.json").read_text())
    assert js["method"] == "integrated_gradients" and js["delta"] is not None
    assert js["completeness"]["relative_error"] < 0.02 and js["meta"]["keep_first"] is True
    main(["attribute", "grad", "tiny-gpt2", "--text", "abc", "--target", "d", "--method", "saliency"])
    assert "saliency" in capsys.readouterr().out


def test_attribute_grad_default_method(capsys):
    # issue 14 item 13: `attribute grad` without --method failed (the verb's defaults overrode --method's default)
    main(["attribute", "grad", "tiny-gpt2", "--text", "abc", "--target", "d"])
    assert "method grad_x_input" in capsys.readouterr().out


def test_patch_path_says_it_is_noising(tmp_path, capsys):
    main(["patch", "path", "tiny-gpt2", *PAIR, "--sender", "blocks.0.attn.z#1", "--receiver", "blocks.1.resid_post",
          "--out", str(tmp_path / "p")])
    out = capsys.readouterr().out
    assert "noising" in out and "corrupted activations patched into the clean run" in out
    r = PatchResult.load(tmp_path / "p")
    assert r.direction == "noise" and "noising" in r.meta["mode"]


def _last_diff(m, site):
    acts = m.record(["the cat sat on", "the bat sat on"], [site])[site]
    return (acts[0, -1] - acts[1, -1]).detach()


def test_patch_subspace_reads_steer_direction_and_plain_files(tmp_path, capsys, tiny):
    from safetensors.torch import save_file

    from actlab.steer import Direction

    site = "blocks.0.resid_post"
    v = _last_diff(tiny("tiny-llama"), site)  # the whole clean-corrupt difference at the patched (last) position
    Direction(v, site, model="tiny-llama").save(tmp_path / "dir")
    main(["patch", "subspace", "tiny-llama", *PAIR, "--direction-file", str(tmp_path / "dir"), "--out",
          str(tmp_path / "sub")])
    eff = json.loads((tmp_path / "sub" / "effect.json").read_text())
    assert eff["site"] == site  # taken from the direction folder
    # along the full difference, the 1-D patch moves the last position exactly as the whole-site patch does
    assert abs(eff["full_patch_normalized"]) > 0.01
    assert eff["normalized"] == pytest.approx(eff["full_patch_normalized"], abs=1e-4)
    # the tensor file inside the folder, and a plain safetensors with a 'direction' tensor (site from --site)
    main(["patch", "subspace", "tiny-llama", *PAIR, "--direction-file", str(tmp_path / "dir" / "direction.safetensors"),
          "--out", str(tmp_path / "sub2")])
    assert json.loads((tmp_path / "sub2" / "effect.json").read_text())["normalized"] == pytest.approx(
        eff["normalized"], abs=1e-6)
    save_file({"direction": v[None].contiguous()}, str(tmp_path / "d.safetensors"))
    _fails(["patch", "subspace", "tiny-llama", *PAIR, "--direction-file", str(tmp_path / "d.safetensors")], capsys,
           "names no site")
    main(["patch", "subspace", "tiny-llama", *PAIR, "--direction-file", str(tmp_path / "d.safetensors"), "--site", site,
          "--out", str(tmp_path / "sub3")])
    assert json.loads((tmp_path / "sub3" / "effect.json").read_text())["normalized"] == pytest.approx(
        eff["normalized"], abs=1e-6)
    save_file({"other": v}, str(tmp_path / "bad.safetensors"))
    _fails(["patch", "subspace", "tiny-llama", *PAIR, "--direction-file", str(tmp_path / "bad.safetensors"), "--site",
            site], capsys, "holds no 'direction' tensor")
