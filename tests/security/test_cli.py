"""``actlab security unlearn|scan`` on the cached digits fixture: report files with CA/ASR intervals; bad input."""
from __future__ import annotations

import json

import pytest

from actlab.cli import main


def test_security_cli_unlearn_and_scan(digits_bd, fixture_cache, tmp_path, capsys):
    main(["security", "unlearn", "--cache", str(fixture_cache), "--identified", "0.25", "--out", str(tmp_path / "u")])
    rep = json.loads((tmp_path / "u" / "report.json").read_text())
    res = rep["results"]
    sel = next(v for k, v in res.items() if k.startswith("ssd selected"))
    assert res["original"]["asr"]["value"] > 0.95 and sel["asr"]["value"] < 0.5
    assert sel["asr"]["lo"] <= sel["asr"]["value"] <= sel["asr"]["hi"]
    assert (tmp_path / "u" / "ca_asr.png").stat().st_size > 1000 and "| model |" in (tmp_path / "u" / "report.md").read_text()
    main(["security", "scan", "--cache", str(fixture_cache), "--steps", "60", "--out", str(tmp_path / "s")])
    rep = json.loads((tmp_path / "s" / "report.json").read_text())
    assert rep["scan"]["target"] == 0 and (tmp_path / "s" / "mask.png").exists()
    assert "flagged" in capsys.readouterr().out


def test_security_cli_bad_input(fixture_cache, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["security", "unlearn", "--identified", "0", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "identified" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["security", "scan", "--patch", "9", "--cache", str(fixture_cache), "--out", str(tmp_path / "y")])
    assert e.value.code == 2 and "does not fit" in capsys.readouterr().err


def test_security_cli_attack(tmp_path, capsys):
    main(["security", "attack", "--positions", "1,2", "--steps", "60", "--limit", "16", "--out", str(tmp_path / "a")])
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    assert rep["a"] == [1, 2] and rep["t_max"][1] >= rep["t_max"][0] >= 1 and rep["vocab"] == 100
    assert rep["fit"] is not None and (tmp_path / "a" / "t_max.png").exists()
    with pytest.raises(SystemExit) as e:
        main(["security", "attack", "--positions", "0", "--out", str(tmp_path / "b")])
    assert e.value.code == 2 and "positions" in capsys.readouterr().err
