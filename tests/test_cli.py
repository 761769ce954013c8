"""The CLI: --help everywhere, sites, record, generate with a saved intervention."""
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from actlab import Add, save_interventions
from actlab.cli import build_parser, main


def _leaves(parser, prefix=()):
    import argparse

    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sub in a.choices.items():
                yield from _leaves(sub, prefix + (name,))
                yield prefix + (name,)


def test_help_everywhere(capsys):
    cmds = list(_leaves(build_parser()))
    assert ("sites",) in cmds and ("demo",) in cmds
    for c in cmds:
        with pytest.raises(SystemExit) as e:
            main([*c, "--help"])
        assert e.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_sites_record_generate(tmp_path, capsys):
    main(["sites", "tiny-llama"])
    out = capsys.readouterr().out
    assert "blocks.1.resid_post" in out and "blocks.0.attn.z" in out
    f = tmp_path / "a.safetensors"
    main(["record", "tiny-llama", "--text", "hello", "--text", "hi there", "--site", "blocks.0.resid_post,blocks.1.mlp_out",
          "--out", str(f)])
    t = load_file(str(f))
    assert t["blocks.0.resid_post"].shape[:2] == t["input_ids"].shape and t["blocks.1.mlp_out"].shape[-1] == 64
    spec = save_interventions(tmp_path / "iv.json", {"blocks.0.resid_post": Add(torch.ones(64), alpha=50.0)}, model="tiny-llama")
    main(["generate", "tiny-llama", "--prompt", "abc", "--max-new-tokens", "4"])
    plain = capsys.readouterr().out
    main(["generate", "tiny-llama", "--prompt", "abc", "--max-new-tokens", "4", "--intervention", str(spec)])
    steered = capsys.readouterr().out
    assert plain != steered


def test_python_m_entrypoint():
    r = subprocess.run([sys.executable, "-m", "actlab", "--help"], check=False, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "sites" in r.stdout


# -- record: one position / site syntax, the library function behind it -------------------------------------------
def test_record_positions_and_sites(tmp_path):
    from actlab import load_model
    from actlab.record_io import load_recording

    m = load_model("tiny-llama")
    text = "hello there friend"
    full = m.record([text], sites=["blocks.0.resid_post", "blocks.1.resid_post"])
    n = full["blocks.0.resid_post"].shape[1]
    for spec, idx in [("1:3", [1, 2]), ("0,2", [0, 2]), ("-2:", [n - 2, n - 1]), ("last", [n - 1])]:
        f = tmp_path / f"{spec.replace(':', '_').replace(',', '_')}.safetensors"
        main(["record", "tiny-llama", "--text", text, "--site", "blocks.*.resid_post", "--positions", spec,
              "--out", str(f)])
        t, meta = load_recording(f)
        for s in ("blocks.0.resid_post", "blocks.1.resid_post"):
            got = t[s].reshape(-1, t[s].shape[-1])
            assert torch.allclose(got, full[s][0, idx], atol=1e-6), (spec, s)
        assert meta["model"] == "tiny-llama" and meta["sites"] == '["blocks.0.resid_post", "blocks.1.resid_post"]'


def test_record_file_input(tmp_path, capsys):
    good = tmp_path / "in.txt"
    good.write_text("first line\n\nsecond one\n")
    out = tmp_path / "a.safetensors"
    main(["record", "tiny-llama", "--file", str(good), "--site", "blocks.0.mlp_out", "--out", str(out)])
    assert load_file(str(out))["input_ids"].shape[0] == 2
    capsys.readouterr()
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"abc\x00\xff\xfe\x01 binary")
    with pytest.raises(SystemExit) as e:
        main(["record", "tiny-llama", "--file", str(binary), "--site", "blocks.0.mlp_out", "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and str(binary) in err and "UTF-8" in err
    with pytest.raises(SystemExit) as e:
        main(["record", "tiny-llama", "--file", str(tmp_path / "none.txt"), "--site", "blocks.0.mlp_out"])
    assert e.value.code == 2 and "none.txt does not exist" in capsys.readouterr().err


# -- the one error policy ----------------------------------------------------------------------------------------
def test_error_policy(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["record", "tiny-gpt2", "--text", "hi", "--site", "blocks.0.resid_psot", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: unknown site 'blocks.0.resid_psot'")
    assert "Traceback" not in err and "blocks.0.resid_post" in err   # the close match is suggested
    with pytest.raises(KeyError, match="unknown site"):                 # --debug: the exception itself, anywhere
        main(["record", "tiny-gpt2", "--text", "hi", "--site", "blocks.0.resid_psot", "--debug"])
    with pytest.raises(SystemExit) as e:
        main(["record", "tiny-gpt2", "--text", "hi", "--site", "blocks.0.resid_post", "--positions", "first"])
    assert e.value.code == 2 and "error: bad positions 'first'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:   # argparse usage errors keep exit 2
        main(["sites"])
    assert e.value.code == 2


def test_error_policy_unexpected_and_legacy_exits(capsys, monkeypatch):
    import actlab.cli as C

    def boom(a):
        raise IndexError("index 9 is out of bounds")
    monkeypatch.setattr(C, "cmd_sites", boom)
    with pytest.raises(SystemExit) as e:
        main(["sites", "tiny-gpt2"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == "error: IndexError: index 9 is out of bounds (run with --debug for the " \
                                        "traceback)\n"

    def old_style(a):
        raise SystemExit("error: --orthogonalize needs --model")
    monkeypatch.setattr(C, "cmd_sites", old_style)
    with pytest.raises(SystemExit) as e:
        main(["sites", "tiny-gpt2"])
    assert e.value.code == 2 and capsys.readouterr().err == "error: --orthogonalize needs --model\n"


def test_error_policy_in_a_real_process(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "actlab", "sites", "no-such-model"], check=False, capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown model 'no-such-model'")
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("extra", [[], ["--modules"]], ids=["small-output", "large-output"])
def test_closed_pipe_is_quiet(extra):
    """`actlab sites tiny-gpt2 | head -1`: the reader is gone before anything is written. Small output fails at
    the final flush, large output (over the 8 KiB buffer) inside a print."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}   # block-buffered, as for a user
    env["HF_HUB_OFFLINE"] = "1"
    p = subprocess.Popen([sys.executable, "-m", "actlab", "sites", "tiny-gpt2", *extra], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    p.stdout.close()   # like `head` exiting early
    err = p.stderr.read().decode()
    rc = p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err and err == "", err
    assert rc == 141


# -- the command list and help texts ---------------------------------------------------------------------------
def test_lists_only_families_that_exist(capsys):
    from pathlib import Path

    import actlab
    import actlab.cli as C

    assert not hasattr(C, "FAMILIES")   # one meaning only: models.sites.FAMILIES is the architectures'
    root = Path(actlab.__file__).parent
    mods = C.family_cli_modules()
    assert mods and all((root / m.split(".")[1] / "cli.py").exists() for m in mods)
    assert {"actlab.store.cli", "actlab.steer.cli"} <= set(mods)
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    verb = {"web": "serve"}    # a family whose verb is not its package name (actlab serve DIR...)
    for family in ("explain", "security", "viz", "web", "probe", "train", "circuits"):
        assert (root / family / "cli.py").exists() == (f"\n    {verb.get(family, family)} " in out), family


def test_generate_help_names_the_right_command(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "usage: actlab generate" in out and "actlab steer apply" in out and "steer extract" not in out
