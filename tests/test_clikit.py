"""actlab.clikit: flags derived from config dataclasses, the model group, one list / position / site syntax."""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

import pytest
import torch

from actlab import clikit


@dataclass
class DemoConfig:
    """A config the way families write them: documented fields."""

    method: str = "mean_diff"
    """mean_diff (CAA) or pca (RepE)."""
    warmup_steps: int = 100
    """Linear warm-up steps of the learning rate."""
    lr: float | None = None
    """Learning rate (None: by architecture and size)."""
    chat: bool = False
    """Wrap prompts in the model's chat template."""
    strengths: list[float] = field(default_factory=lambda: [0.5, 1.0])
    """Steering strengths to sweep."""
    n_boot: int = 200
    """Resamples for the 95% interval (a lone % in a docstring is text, not a format; 100%% stays)."""

    def __post_init__(self):
        if self.method not in ("mean_diff", "pca"):
            raise ValueError(f"unknown method {self.method!r}; choose mean_diff or pca")


def _parser():
    ap = clikit.ArgumentParser(prog="actlab")
    sub = clikit.subcommands(ap, dest="command")
    fam = sub.add_parser("fam")
    verbs = fam.add_subparsers(dest="verb")   # a family's nested verbs inherit the kit's parser class
    p = verbs.add_parser("go")
    p.add_argument("--out", required=True)
    clikit.add_config(p, DemoConfig)
    return ap


def test_flags_from_a_dataclass_in_help(capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["fam", "go", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())   # unwrap the help text
    assert "--warmup-steps int" in out and "--warmup_steps" not in out   # kebab-case name and type
    assert "Linear warm-up steps of the learning rate. (default: 100)" in out   # docstring help and default
    assert "--method str" in out and "mean_diff (CAA) or pca (RepE). (default: mean_diff)" in out
    assert "Learning rate (None: by architecture and size)." in out
    # the list metavar is "List" (simple-parsing 0.1.7) or "list" (0.1.9): the flag, help and default are what count
    assert re.search(r"--strengths [Ll]ist Steering strengths to sweep\. \(default: \[0\.5, 1\.0\]\)", out), out
    assert "--chat bool, --nochat bool Wrap prompts in the model's chat template. (default: False)" in out
    assert "Resamples for the 95% interval (a lone % in a docstring is text, not a format; 100% stays)." in out


def test_config_parsed_with_types_and_defaults():
    a = _parser().parse_args(["fam", "go", "--out", "o", "--warmup-steps", "7", "--lr", "0.5", "--chat",
                              "--strengths", "1", "2.5"])
    cfg = clikit.config_from_args(a)
    assert cfg == DemoConfig(method="mean_diff", warmup_steps=7, lr=0.5, chat=True, strengths=[1.0, 2.5])
    assert a.out == "o"
    d = clikit.config_from_args(_parser().parse_args(["fam", "go", "--out", "o"]))
    assert d == DemoConfig()


def test_config_errors():
    with pytest.raises(SystemExit) as e:   # argparse's own type error: usage + exit 2
        _parser().parse_args(["fam", "go", "--out", "o", "--warmup-steps", "many"])
    assert e.value.code == 2
    with pytest.raises(ValueError, match="unknown method 'svd'"):   # the config's own check, raised as is
        _parser().parse_args(["fam", "go", "--out", "o", "--method", "svd"])
    with pytest.raises(TypeError, match="needs an actlab.clikit.ArgumentParser"):
        clikit.add_config(argparse.ArgumentParser(), DemoConfig)
    with pytest.raises(TypeError, match="needs a dataclass"):
        clikit.add_config(clikit.ArgumentParser(), dict)
    with pytest.raises(KeyError, match="no config parsed under 'cfg'"):
        clikit.config_from_args(argparse.Namespace())


def test_model_group():
    p = clikit.ArgumentParser(prog="x")
    clikit.add_model_args(p)
    a = p.parse_args(["tiny-gpt2", "--dtype", "bf16"])
    assert (a.model, a.dtype, a.device) == ("tiny-gpt2", "bf16", None)
    with pytest.raises(SystemExit):
        p.parse_args(["tiny-gpt2", "--dtype", "int8"])
    q = clikit.ArgumentParser(prog="y")
    clikit.add_model_args(q, positional=False, required=False)
    with pytest.raises(ValueError, match="needs a model: give --model"):
        clikit.model_from_args(q.parse_args([]))
    m = clikit.model_from_args(q.parse_args(["--model", "tiny-gpt2", "--dtype", "fp16"]))
    assert m.name == "tiny-gpt2" and m.dtype == torch.float16


@pytest.mark.parametrize("value,expected", [
    (None, []), ("a", ["a"]), ("a,b", ["a", "b"]), (" a , b ,", ["a", "b"]), (["a,b", "c"], ["a", "b", "c"]),
    (["x"], ["x"]), ("", []),
])
def test_split_list(value, expected):
    assert clikit.split_list(value) == expected


@pytest.mark.parametrize("text,expected", [
    ("all", "all"), ("last", "last"), ("LAST", "last"), ("-1", -1), ("5", 5), ("2:7", slice(2, 7)),
    ("2:", slice(2, None)), (":3", slice(None, 3)), ("-3:", slice(-3, None)), ("::2", slice(None, None, 2)),
    ("1,3,5", [1, 3, 5]), ("0,", [0]), (None, "all"), (4, 4),
])
def test_parse_positions(text, expected):
    assert clikit.parse_positions(text) == expected


def test_negative_positions_are_values_not_flags():
    p = clikit.ArgumentParser(prog="x")
    p.add_argument("--positions")
    p.add_argument("--n", type=int)
    for v, want in (("-3:", slice(-3, None)), ("-3:-1", slice(-3, -1)), ("-1", -1), (":-1", slice(None, -1))):
        a = p.parse_args(["--positions", v, "--n", "-4"])
        assert (a.positions, a.n) == (v, -4)
        assert clikit.parse_positions(a.positions) == want


@pytest.mark.parametrize("text,match", [
    ("first", "not an integer"), ("1:2:3:4", "start:stop"), ("1:x", "'x' is not an integer"),
    ("1,-2", "count from 0"), ("::0", "step cannot be 0"), ("", "empty positions"), ("1,2:3", "start:stop"),
])
def test_parse_positions_errors(text, match):
    with pytest.raises(ValueError, match=match):
        clikit.parse_positions(text)


def test_positions_select_what_they_say(tiny_gpt2):
    """The syntax maps to the tokens a user means: compare with python slicing of the all-positions record."""
    m = tiny_gpt2
    text, site = "hello world, how are you", "blocks.0.resid_post"
    full = m.record([text], sites=[site])[site][0]
    n = full.shape[0]
    for spec, idx in [("1:3", [1, 2]), ("-3:", list(range(n - 3, n))), ("::2", list(range(0, n, 2))),
                      ("0,2,5", [0, 2, 5]), ("-1", [n - 1]), ("4", [4]), ("last", [n - 1])]:
        got = m.record([text], sites=[site], positions=clikit.parse_positions(spec))[site]
        assert torch.allclose(got.reshape(-1, full.shape[-1]), full[idx], atol=1e-6), spec


def test_parse_sites(tiny_gpt2):
    m = tiny_gpt2
    assert clikit.parse_sites(m, "blocks.*.resid_post") == ["blocks.0.resid_post", "blocks.1.resid_post"]
    assert clikit.parse_sites(m, ["embed,blocks.1.mlp_out", "logits"]) == ["embed", "blocks.1.mlp_out", "logits"]
    with pytest.raises(KeyError, match="unknown site 'blocks.7.resid_post'"):
        clikit.parse_sites(m, "blocks.7.resid_post")
    with pytest.raises(ValueError, match="no sites given"):
        clikit.parse_sites(m, ",")


@pytest.fixture(scope="module")
def tiny_gpt2():
    from actlab import load_model

    return load_model("tiny-gpt2")


def test_text_args_combine_texts_and_file_lines(tmp_path):
    p = clikit.ArgumentParser()
    clikit.add_text_args(p)
    f = tmp_path / "in.txt"
    f.write_text("first line\n\nsecond line\n")
    assert clikit.texts_from_args(p.parse_args(["--text", "a", "--text", "b", "--file", str(f)])) == [
        "a", "b", "first line", "second line"]
    with pytest.raises(ValueError, match="nothing to record: give --text"):
        clikit.texts_from_args(p.parse_args([]), "nothing to record")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(ValueError, match="bin.txt"):
        clikit.texts_from_args(p.parse_args(["--file", str(tmp_path / "bin.txt")]))
