"""``actlab probe train|eval|monitor`` end to end on tiny-gpt2: report files, probe artifact, clear errors."""
from __future__ import annotations

import json

import pytest

from actlab.cli import main


def _files(tmp_path):
    pos = [f"the cat sat on mat {i}" for i in range(10)]
    neg = [f"0123 4567 {i} 89" for i in range(10)]
    (tmp_path / "pos.txt").write_text("\n".join(pos))
    (tmp_path / "neg.txt").write_text("\n".join(neg))
    return str(tmp_path / "pos.txt"), str(tmp_path / "neg.txt")


def test_probe_cli_round_trip(tmp_path, capsys):
    pos, neg = _files(tmp_path)
    out = tmp_path / "run"
    main(["probe", "train", "tiny-gpt2", "--site", "blocks.1.resid_post", "--positive", pos, "--negative", neg,
          "--method", "mean_diff", "--position", "mean", "--n-boot", "200", "--out", str(out)])
    rep = json.loads((out / "report.json").read_text())
    assert rep["cv"]["auroc"]["value"] > 0.9   # letters vs digits: trivially separable even in a random model
    assert (out / "roc.png").stat().st_size > 1000 and (out / "report.md").read_text().startswith("# Probe")
    main(["probe", "eval", str(out / "probe"), "--model", "tiny-gpt2", "--positive", pos, "--negative", neg,
          "--n-boot", "100", "--out", str(tmp_path / "ev")])
    ev = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert ev["eval"]["auroc"]["value"] > 0.9
    main(["probe", "monitor", str(out / "probe"), "--model", "tiny-gpt2", "--text", "hello", "--max-new-tokens", "3",
          "--out", str(tmp_path / "mon")])
    mon = json.loads((tmp_path / "mon" / "report.json").read_text())
    assert len(mon["scores"][0]) == 3
    assert "stopped at" in capsys.readouterr().out


def test_probe_cli_errors(tmp_path, capsys):
    pos, neg = _files(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["probe", "train", "tiny-gpt2", "--site", "blocks.1.resid_post", "--positive", pos, "--negative",
              str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "missing.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["probe", "train", "tiny-gpt2", "--site", "blocks.1.resid_post", "--positive", pos, "--negative", neg,
              "--method", "svm", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
