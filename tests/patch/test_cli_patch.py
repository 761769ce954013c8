"""CLI: actlab patch activation|attribution|path|subspace and actlab attribute ig|grad end to end on tiny models."""
import json

import pytest

from actlab.cli import main
from actlab.patch import PatchResult

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
    with pytest.raises(SystemExit, match="tokenizes to 8 tokens"):
        main(["patch", "activation", "tiny-llama", "--clean", "the cat", "--corrupt", "the cats", "--correct", "x",
              "--incorrect", "y"])


def test_attribute_cli(tmp_path, capsys):
    main(["attribute", "ig", "tiny-llama", "--text", "the cat sat on", "--target", "x", "--contrast", "y", "--steps",
          "8", "--out", str(tmp_path / "ig")])
    out = capsys.readouterr().out
    assert "completeness delta" in out and "\x1b[48;5;" in out
    js = json.loads((tmp_path / "ig" / "attribution.json").read_text())
    assert js["method"] == "integrated_gradients" and js["delta"] is not None
    main(["attribute", "grad", "tiny-gpt2", "--text", "abc", "--target", "d", "--method", "saliency"])
    assert "saliency" in capsys.readouterr().out
