"""``actlab probe latent-guard`` end to end on a tiny chat-templated model (report files, AUROC with intervals, the
guard artifact) and the guard as a multi-site monitor: its streamed scores equal the guard applied to a recording of
the finished sequence, and ``probe monitor`` loads a guard folder."""
from __future__ import annotations

import json

import pytest
import torch

from actlab import clikit
from actlab.cli import main
from actlab.probe import LatentGuard, load_monitor, monitor_generate

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SITES = ["blocks.0.resid_post", "blocks.1.resid_post"]


@pytest.fixture
def chat_tiny():
    from actlab import load_model

    m = load_model("tiny-gpt2")
    m.tokenizer.chat_template = CHATML
    return m


def test_latent_guard_cli(chat_tiny, tmp_path, capsys, monkeypatch):
    # the class marker is the instruction's last token (t_inst): even a random model separates it perfectly
    (tmp_path / "h.txt").write_text("\n".join(f"request {i} xx" for i in range(12)))
    (tmp_path / "s.txt").write_text("\n".join(f"request {i} oo" for i in range(12)))
    monkeypatch.setattr(clikit, "model_from_args", lambda a: chat_tiny)
    out = tmp_path / "lg"
    main(["probe", "latent-guard", "tiny-gpt2", "--sites", ",".join(SITES), "--harmful", str(tmp_path / "h.txt"),
          "--harmless", str(tmp_path / "s.txt"), "--templates", "override,prefix", "--n-boot", "100",
          "--out", str(out)])
    assert "auroc_plain: 1.000" in capsys.readouterr().out
    rep = json.loads((out / "report.json").read_text())
    ev = rep["eval"]
    assert ev["auroc_plain"]["value"] == 1.0 and ev["n_train"] == 16 and ev["n_test"] == 8
    assert set(ev["per_template"]) == {"override", "prefix"}
    r = ev["auroc_rewrites"]
    assert r["lo"] <= r["value"] <= r["hi"] and ev["flag_harmful_rewrites"]["method"] == "wilson"
    assert (out / "roc.png").stat().st_size > 1000 and "![roc.png](roc.png)" in (out / "report.md").read_text()
    guard = load_monitor(out / "guard")
    assert isinstance(guard, LatentGuard) and guard.sites == SITES and guard.c_harm.shape == (2, 64)
    # the saved centroids score the held-out marker prompts as the report did (harmful above harmless)
    s = guard.score_texts(chat_tiny, ["request 99 xx", "request 99 oo"])
    assert s[0] > s[1]
    main(["probe", "monitor", str(out / "guard"), "--model", "tiny-gpt2", "--text", "hello", "--max-new-tokens", "3",
          "--out", str(tmp_path / "mon")])
    assert len(json.loads((tmp_path / "mon" / "report.json").read_text())["scores"][0]) == 3


def test_guard_monitor_streams_equal_recorded(tiny):
    m = tiny("tiny-gpt2")
    g = torch.Generator().manual_seed(0)
    guard = LatentGuard(SITES, torch.randn(2, 64, generator=g), torch.randn(2, 64, generator=g), model=m.name)
    res = monitor_generate(m, ["hello there", "a"], guard, max_new_tokens=4)
    assert res.scores.shape == (2, 4)
    ids = res.ids
    acts = m.record({"input_ids": ids, "attention_mask": (ids != m.tokenizer.pad_token_id).long()}, SITES)
    n_prompt = ids.shape[1] - 4
    want = torch.stack([guard.score({s: acts[s][:, t] for s in SITES}) for t in range(n_prompt - 1, ids.shape[1] - 1)],
                       1)
    torch.testing.assert_close(res.scores, want, atol=1e-4, rtol=1e-4)
    small = LatentGuard(SITES, torch.randn(2, 32), torch.randn(2, 32))
    with pytest.raises(ValueError, match="d_model=32"):
        monitor_generate(m, "hi", small, max_new_tokens=2)


def test_load_monitor_refuses_other_kinds(tmp_path):
    from actlab.artifact import save_artifact

    save_artifact(tmp_path / "d", "direction", {"x": 1}, {"v": torch.zeros(3)})
    with pytest.raises(ValueError, match="'direction' artifact"):
        load_monitor(tmp_path / "d")
    with pytest.raises(FileNotFoundError):
        load_monitor(tmp_path / "missing")
    with pytest.raises(SystemExit, match="unknown jailbreak template.*nope") as e:
        main(["probe", "latent-guard", "tiny-gpt2", "--templates", "nope", "--out", str(tmp_path / "x")])
    assert e.value.code == 2
