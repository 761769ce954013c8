"""Attribution folders: written through actlab.artifact, read back by Attribution.load; main's old folders load."""
from pathlib import Path

import pytest
import torch

from actlab.artifact import ArtifactError, load_artifact
from actlab.attribute import Attribution, contrastive_target, integrated_gradients

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy"


def test_attribution_roundtrip_and_completeness(tiny, tmp_path):
    m = tiny("tiny-llama")
    x, y = m.tokenizer("x")["input_ids"][-1], m.tokenizer("y")["input_ids"][-1]
    a = integrated_gradients(m, "the cat", contrastive_target(x, y), baseline="eos", steps=8)
    c = a.completeness
    assert c["sum_attr"] == pytest.approx(float(a.attr.double().sum()), abs=1e-5)
    assert c["f_diff"] == pytest.approx(a.f_x - a.f_baseline) and c["delta"] == a.delta
    assert c["relative_error"] == pytest.approx(abs(a.delta) / abs(a.f_x - a.f_baseline))
    out = a.save(tmp_path / "ig")
    assert load_artifact(out, "attribute.attribution", tensors_file="attribution.safetensors",
                         cfg_file="attribution.json").config["completeness"] == pytest.approx(c)
    b = Attribution.load(out)
    assert torch.equal(b.attr, a.attr) and torch.equal(b.scores, a.scores)
    assert (b.method, b.f_x, b.delta, b.tokens, b.meta) == (a.method, a.f_x, a.delta, a.tokens, a.meta)
    assert (out / "tokens.html").read_text().startswith("<div")
    from actlab.artifact import folder_lock

    with folder_lock(out), pytest.raises(ArtifactError, match="in use by another actlab process"):
        a.save(out)  # a second writer is refused while the folder is held
    (out / "attribution.json").write_text('{"artifact": {"kind": "patch.result", "format_version": 1}}')
    with pytest.raises(ArtifactError, match="expected 'attribute.attribution'"):
        Attribution.load(out)


def test_legacy_attribution_folder_loads():
    a = Attribution.load(LEGACY / "attribution")
    assert a.method == "ig" and a.tokens == ["The", " cat", " sat", "."]
    assert torch.allclose(a.scores, a.attr.sum(-1))
    with pytest.raises(FileNotFoundError):
        Attribution.load(LEGACY / "nothing_here")
