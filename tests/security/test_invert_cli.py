"""``actlab security invert --method tijo|invertune`` on the cached toys: report files (md, json with CA/ASR intervals,
PNGs), the planted target found; a clean-twin control is not flagged; bad input exits 2 naming the flag."""
from __future__ import annotations

import json

import pytest

from actlab.cli import main


def test_invert_tijo_report(dualkey_bd, fixture_cache, tmp_path, capsys):
    main(["security", "invert", "--method", "tijo", "--pairs", "200", "--cache", str(fixture_cache), "--out", str(tmp_path / "t")])
    rep = json.loads((tmp_path / "t" / "report.json").read_text())
    assert rep["tijo"]["target"] == 3 and rep["tijo"]["token"] == 7 and rep["tijo"]["flagged"]
    a = rep["tijo"]["asr_inverted"]
    assert a["value"] > 0.9 and a["lo"] <= a["value"] <= a["hi"] and a["method"] == "wilson"
    assert rep["ablations"]["visual_only"]["loss"] > 1.5 and rep["fixture"]["asr_both"]["value"] > 0.95
    assert (tmp_path / "t" / "losses.png").stat().st_size > 1000
    assert "| asr_image_only |" in (tmp_path / "t" / "report.md").read_text()
    assert "tijo: flagged True target 3 word 7" in capsys.readouterr().out


def test_invert_invertune_report(clip_bd, fixture_cache, tmp_path, capsys):
    main(["security", "invert", "--method", "invertune", "--cache", str(fixture_cache), "--out", str(tmp_path / "i")])
    rep = json.loads((tmp_path / "i" / "report.json").read_text())
    assert rep["invertune"]["estimate"]["target"] == 3 and rep["invertune"]["estimate"]["flagged"]
    before, after = rep["results"]["original"], rep["results"]["after activation tuning"]
    assert before["asr_planted"]["value"] > 0.95 and after["asr_planted"]["value"] < 0.1
    assert after["ca"]["value"] > before["ca"]["value"] - 0.03 and after["ca"]["lo"] <= after["ca"]["value"]
    assert rep["trigger_corner_share"] > 0.8
    rounds = rep["invertune"]["rounds"]   # measured: round 0 tuned, the re-inverted trigger reaches only 0.12: stop
    assert rounds[0]["tuned"] and len(rounds) == 2 and not rounds[1]["tuned"] and rounds[1]["trigger_rate"] < 0.5
    for f in ("landing.png", "trigger.png", "report.md"):
        assert (tmp_path / "i" / f).exists()
    assert "invertune: target 3 flagged True" in capsys.readouterr().out


def test_invert_clean_control_and_bad_input(dualkey_clean, fixture_cache, tmp_path, capsys):
    main(["security", "invert", "--clean", "true", "--pairs", "200", "--cache", str(fixture_cache), "--out", str(tmp_path / "c")])
    assert json.loads((tmp_path / "c" / "report.json").read_text())["tijo"]["flagged"] is False
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["security", "invert", "--method", "neuralcleanse", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "method='neuralcleanse'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["security", "invert", "--pairs", "0", "--out", str(tmp_path / "y")])
    assert e.value.code == 2 and "pairs" in capsys.readouterr().err
