"""`actlab circuits graph|validate` end to end on a tiny model (in-process), and their errors (error: ..., exit 2)."""
from __future__ import annotations

import json

import pytest

from actlab.cli import main

from .conftest import random_transcoders


def _fails(argv, capsys, match):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert match in capsys.readouterr().err


@pytest.fixture
def tc_folder(tiny, tmp_path):
    m = tiny("tiny-gpt2")
    for t in random_transcoders(m):
        t.save(tmp_path / "tc" / t.cfg.site)
    return tmp_path / "tc"


def test_graph_then_validate(tc_folder, tmp_path, capsys):
    out = tmp_path / "g"
    main(["circuits", "graph", "tiny-gpt2", "--transcoders", str(tc_folder), "--text", "The cat sat",
          "--out", str(out), "--slug", "cat", "--max-n-logits", "2", "--node-threshold", "0.9"])
    text = capsys.readouterr().out
    path = text.split("top path: ")[1].splitlines()[0].split(" -> ")
    assert path[0].startswith(("tok ", "err ")) and path[-1].startswith("logit ")
    s = json.loads((out / "summary.json").read_text())
    assert s["identity_error"] < 1e-3 and len(s["targets"]) <= 2 and s["config"]["node_threshold"] == 0.9
    j = json.loads((out / "cat.json").read_text())
    assert j["metadata"]["slug"] == "cat" and j["metadata"]["node_threshold"] == 0.9
    assert j["metadata"]["transcoder_list"] == ["blocks.0.mlp_in", "blocks.1.mlp_in"]
    assert [g["slug"] for g in json.loads((out / "graph-metadata.json").read_text())["graphs"]] == ["cat"]
    main(["circuits", "validate", "tiny-gpt2", "--transcoders", str(tc_folder), "--graph", str(out), "--k", "3",
          "--scale", "0.05", "--out", str(out)])
    text = capsys.readouterr().out
    assert "correlation (graph total effect vs ablation, replacement)" in text
    v = json.loads((out / "validation.json").read_text())
    assert len(v["nodes"]) == 3 and v["scale"] == 0.05 and v["baseline_error"] < 1e-4


def test_errors(tc_folder, tmp_path, capsys):
    import shutil

    _fails(["circuits", "graph", "tiny-gpt2", "--transcoders", str(tmp_path / "nope"), "--text", "a", "--out",
            str(tmp_path / "o0")], capsys, "no transcoder folder")
    (tmp_path / "empty").mkdir()
    _fails(["circuits", "graph", "tiny-gpt2", "--transcoders", str(tmp_path / "empty"), "--text", "a", "--out",
            str(tmp_path / "o0")], capsys, "holds no dictionary folders")
    _fails(["circuits", "graph", "tiny-gpt2", "--transcoders", str(tc_folder), "--text", "a", "--target", "ab",
            "--out", str(tmp_path / "o")], capsys, "is 2 tokens")
    main(["circuits", "graph", "tiny-gpt2", "--transcoders", str(tc_folder), "--text", "ab", "--out",
          str(tmp_path / "ok"), "--max-n-logits", "1"])
    _fails(["circuits", "validate", "tiny-gpt2", "--transcoders", str(tc_folder), "--graph", str(tmp_path / "ok"),
            "--mode", "x"], capsys, "mode must be one of")
    _fails(["circuits", "validate", "tiny-gpt2", "--transcoders", str(tc_folder), "--graph", str(tmp_path / "o2")],
           capsys, "o2")
    shutil.rmtree(tc_folder / "blocks.1.mlp_in")
    _fails(["circuits", "graph", "tiny-gpt2", "--transcoders", str(tc_folder), "--text", "a", "--out",
            str(tmp_path / "o1")], capsys, "missing blocks [1]")
