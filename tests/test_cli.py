"""The CLI: --help everywhere, sites, record, generate with a saved intervention."""
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
    r = subprocess.run([sys.executable, "-m", "actlab", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "sites" in r.stdout
