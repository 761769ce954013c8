"""``actlab security reroute``: flags from actlab.security.rerouting.ReroutingConfig (via clikit), a report folder on
the toy tiny-gpt2; bad flags exit 2 naming the flag."""
from __future__ import annotations

import json

import pytest

from actlab.cli import main


def test_reroute_cli_report(tmp_path, capsys):
    main(["security", "reroute", "--suffix-len", "4", "--steps", "2", "--search-width", "8", "--search-topk", "8",
          "--n-random", "4", "--sites", "blocks.1.resid_post", "--out", str(tmp_path / "r")])
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["config"]["suffix_len"] == 4 and rep["config"]["sites"] == "blocks.1.resid_post"
    assert rep["result"]["iterations"] <= 2 and len(rep["result"]["suffix_ids"]) == 4
    assert (tmp_path / "r" / "loss.png").exists() and (tmp_path / "r" / "report.md").exists()
    assert "reroute: crossed" in capsys.readouterr().out


def test_reroute_cli_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["security", "reroute", "--position", "middle", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "position='middle'" in capsys.readouterr().err
