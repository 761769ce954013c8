"""`actlab lens logit|tuned|dla` end to end on tiny models (in-process), and their errors (error: ..., exit 2)."""
import json

import pytest

from actlab.cli import main


def _fails(argv, capsys, match):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert match in capsys.readouterr().err


def test_tuned_then_logit_then_dla(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(["the quick brown fox jumps over the lazy dog"] * 20))
    main(["lens", "tuned", "tiny-llama", "--data", str(corpus), "--out", str(tmp_path / "tl"), "--layers", "0",
          "--steps", "20", "--lr", "0.01", "--context-length", "16", "--max-contexts", "16"])
    out = capsys.readouterr().out
    assert "blocks.0.resid_post held-out KL: logit lens" in out
    cfg = json.loads((tmp_path / "tl" / "cfg.json").read_text())
    assert cfg["artifact"]["kind"] == "actlab.tuned_lens" and cfg["train"]["steps"] == 20
    main(["lens", "logit", "tiny-llama", "--text", "hello world", "--text", "abc", "--tuned", str(tmp_path / "tl"),
          "--out", str(tmp_path / "ll"), "--k", "3"])
    s = json.loads((tmp_path / "ll" / "summary.json").read_text())
    assert set(s["lenses"]) == {"logit", "tuned"} and list(s["lenses"]["tuned"]) == ["blocks.0.resid_post"]
    assert s["lenses"]["logit"]["blocks.1.resid_post"]["mean_kl"] < 1e-6
    assert (tmp_path / "ll" / "lens.png").read_bytes()[:4] == b"\x89PNG"
    assert "## tuned lens" in (tmp_path / "ll" / "tokens.md").read_text()
    main(["lens", "dla", "tiny-gpt2", "--text", "hello world", "--target", "a", "--contrast", "70",
          "--out", str(tmp_path / "dla"), "-k", "4"])
    d = json.loads((tmp_path / "dla" / "dla.json").read_text())
    assert abs(d["total"] - d["logit"]) < 1e-4 and "blocks.1.attn.z#3" in d["components"]


def test_errors(tmp_path, capsys):
    _fails(["lens", "tuned", "tiny-llama", "--out", str(tmp_path / "x")], capsys, "exactly one of --data")
    _fails(["lens", "logit", "tiny-llama", "--out", str(tmp_path / "y")], capsys, "no texts")
    _fails(["lens", "logit", "tiny-bert", "--text", "a b", "--out", str(tmp_path / "z")], capsys,
           "bert: no unembedding")
    _fails(["lens", "tuned", "tiny-llama", "--data", "demo", "--out", str(tmp_path / "w"), "--optimizer", "x"],
           capsys, "optimizer must be")
    _fails(["lens", "dla", "tiny-gpt2", "--text", "hi", "--target", "ab"], capsys, "is 2 tokens")
