"""``actlab train <recipe>``: flags come from the config dataclasses; a recipe runs and writes its report; bad
values raise clear errors (the top-level ``actlab`` turns them into ``error: ...`` and exit 2)."""
import json

import pytest

from actlab import clikit
from actlab.train import cli


def parser():
    ap = clikit.ArgumentParser(prog="actlab")
    cli.register(clikit.subcommands(ap, dest="command"))
    return ap


def test_every_recipe_has_config_flags(capsys):
    ap = parser()
    for verb in cli.VERBS:
        with pytest.raises(SystemExit):
            ap.parse_args(["train", verb, "--help"])
        assert "--out" in capsys.readouterr().out
    a = ap.parse_args(["train", "induction", "--steps", "7"])
    assert a.cfg.steps == 7 and a.recipe == "induction"


def test_concepts_verb_runs_and_writes_its_report(tmp_path, capsys):
    out = tmp_path / "c"
    a = parser().parse_args(["train", "concepts", "--out", str(out), "--n-checkpoints", "10", "--samples", "40"])
    a.func(a)
    printed = json.loads(capsys.readouterr().out.split("\nwrote")[0])
    assert printed["checks"]["over_earlier"] is True
    rep = json.loads((out / "concepts.json").read_text())
    assert rep["format_version"] == 1 and rep["onset"]["over"] < rep["onset"]["plain"]
    assert (out / "concepts_accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_values_are_refused_with_the_argument_named():
    with pytest.raises(ValueError, match="2\\*max_len <= context"):
        parser().parse_args(["train", "induction", "--max-len", "20"])
    with pytest.raises(ValueError, match="grad='detach'"):
        parser().parse_args(["train", "induction", "--grad", "detach"])
