"""``actlab probe neurofeedback`` end to end on a tiny chat-templated model: flags from NFConfig, the report files
(markdown, JSON, both PNGs) and their content (chance levels, every axis and N, balanced train labels)."""
from __future__ import annotations

import json

import pytest

from actlab import clikit
from actlab.cli import main

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_neurofeedback_cli(tmp_path, capsys, monkeypatch):
    from actlab import load_model

    m = load_model("tiny-gpt2")
    m.tokenizer.chat_template = CHATML
    monkeypatch.setattr(clikit, "model_from_args", lambda a: m)
    out = tmp_path / "nf"
    main(["probe", "neurofeedback", "tiny-gpt2", "--site", "blocks.1.resid_post", "--axes", "lr,pc2",
          "--n-shots", "0,1", "--seeds", "2", "--control-shots", "1", "--n-samples", "2", "--n-given", "3",
          "--max-new-tokens", "3", "--n-boot", "50", "--n-test", "8", "--fmt", "plain", "--out", str(out)])
    assert "pc2: reporting AUROC N=0" in capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    assert rep["chance"]["auroc"] == 0.5 and rep["chance"]["d"] == 0.0
    assert rep["n_train"] == 92 and rep["n_test"] == 8 and rep["site"] == "blocks.1.resid_post"
    assert set(rep["axes"]) == {"lr", "pc2"} and rep["config"]["fmt"] == "plain"
    for r in rep["axes"].values():
        assert set(r["reporting"]["auroc"]) == {"0", "1"} and len(r["reporting"]["auroc"]["1"]["per_seed"]) == 2
        assert set(r["reporting"]["shuffled"]) == {"1"} and len(r["reporting"]["rate_1"]["1"]) == 2
        assert r["accuracy_chance"] == max(r["test_label_rate"], 1 - r["test_label_rate"]) >= 0.5
        assert set(r["explicit"]["texts"]["1"]) == {"0", "1"} and 0.0 <= r["explicit"]["label_match"]["1"] <= 1.0
        iv = r["implicit"]["1"]["per_seed"][0]
        assert iv["lo"] <= iv["value"] <= iv["hi"] and 0 < r["implicit"]["p"]["1"] <= 1
    assert rep["axes"]["pc2"]["explained_variance"] > 0 and rep["axes"]["lr"]["explained_variance"] is None
    md = (out / "report.md").read_text()
    assert "| pc2 |" in md and "![reporting.png](reporting.png)" in md
    assert (out / "reporting.png").stat().st_size > 1000 and (out / "control.png").stat().st_size > 1000


def test_neurofeedback_config_errors():
    from actlab.probe import NFConfig

    with pytest.raises(ValueError, match="unknown axis 'pc0'"):
        NFConfig(axes="lr,pc0")
    with pytest.raises(ValueError, match="dataset='ethics'"):
        NFConfig(dataset="ethics")
    with pytest.raises(ValueError, match="n_shots='4,x'"):
        NFConfig(n_shots="4,x")
    with pytest.raises(ValueError, match="fmt="):
        NFConfig(fmt="xml")
