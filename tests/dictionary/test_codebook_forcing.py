"""Code forcing during generate(): with k=1 and a code forced at every position, the site holds exactly that code's
vector at prefill and every decode step (so generation equals replacing the site by it); forcing at the last
position only changes each forward call's last token and leaves the others snapped to their own codes."""
import pytest
import torch

from actlab import load_model
from actlab.core import Replace
from actlab.dictionary.codebook import CodebookLayer
from actlab.dictionary.codebook_model import forcing, splice

SITE = "blocks.0.resid_post"


def test_forcing_every_position_equals_replacing_by_the_code():
    m = load_model("tiny-llama")
    layer = CodebookLayer(m.d_model, 16, k=1, seed=0)
    with forcing(m, SITE, layer, 5, where="all"):
        got = m.generate(["hello", "ab"], max_new_tokens=4, return_ids=True)
    with m.intervene({SITE: Replace(layer.codes[5].detach())}):
        want = m.generate(["hello", "ab"], max_new_tokens=4, return_ids=True)
    assert torch.equal(got, want)
    with m.intervene({SITE: splice(layer)}):
        plain = m.generate(["hello", "ab"], max_new_tokens=4, return_ids=True)
    assert not torch.equal(plain, got)  # the forced code changes the continuation


def test_forcing_last_position_only():
    m = load_model("tiny-llama")
    layer = CodebookLayer(m.d_model, 16, k=1, seed=0)
    seen = []
    edit = splice(layer, 7, where="last")

    def spy(act, ctx):
        out = edit(act, ctx)
        snapped = layer.codes[layer.select(act)[..., 0]]
        seen.append((out.detach(), snapped.detach(), act.shape[1]))
        return out

    with m.intervene({SITE: spy}):
        m.generate(["hello"], max_new_tokens=3)
    assert [n for _, _, n in seen] == [6, 1, 1]  # prefill (<bos>hello), then one token per decode step
    for out, snapped, _ in seen:
        assert torch.allclose(out[:, -1], layer.codes[7].detach().expand_as(out[:, -1]))
        assert torch.allclose(out[:, :-1], snapped[:, :-1])
    with pytest.raises(IndexError, match="out of range"):
        splice(layer, 16)
    with pytest.raises(ValueError, match="where="):
        splice(layer, 1, where="first")


def test_cli_codebook_train_and_generate(tmp_path, capsys):
    """`actlab codebook train` fine-tunes and saves; `generate` reloads both and forces a code: the forced
    continuation equals the library's on the reloaded model."""
    from actlab import clikit
    from actlab.dictionary.cli import register
    from actlab.dictionary.codebook_model import load_codebook

    ap = clikit.ArgumentParser(prog="actlab")
    register(clikit.subcommands(ap, dest="command"))

    def main(argv):
        a = ap.parse_args(argv)
        a.func(a)

    f = tmp_path / "t.txt"
    f.write_text("\n".join(f"the {w} sat on the mat and the {w} ran" for w in ["cat", "dog", "cow", "hen"] * 6))
    main(["codebook", "train", "tiny-llama", "--file", str(f), "--site", SITE, "--codes", "8", "--k", "2",
          "--steps", "3", "--batch-size", "2", "--context-length", "16", "--eval-contexts", "2",
          "--out", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert "held-out loss: original" in out and "codebook trained (model frozen)" in out
    assert "within 10% of the original" in out
    layer, site, cfg = load_codebook(tmp_path / "c" / "codebook")
    assert site == SITE and cfg["k"] == 2 and layer.codes.shape == (8, 64) and "loss_original" in cfg["report"]
    main(["codebook", "generate", str(tmp_path / "c"), "--code", "3", "--prompt", "the", "--max-new-tokens", "3"])
    out = capsys.readouterr().out
    assert not (tmp_path / "c" / "model").exists() and cfg["base_model"] == "tiny-llama"  # frozen: no model copy
    m = load_model("tiny-llama")
    with forcing(m, site, layer, 3):
        want = m.generate(["the"], max_new_tokens=3)[0]
    assert f"code 3 forced (last): {want!r}" in out
    # jointly trained: the fine-tuned copy is written, and generate applies the codebook to it, not to the base
    main(["codebook", "train", "tiny-llama", "--file", str(f), "--site", SITE, "--codes", "8", "--k", "2",
          "--steps", "3", "--batch-size", "2", "--context-length", "16", "--eval-contexts", "2",
          "--train-model", "true", "--lr", "0.05", "--out", str(tmp_path / "j")])
    capsys.readouterr()
    layer_j, _, cfg_j = load_codebook(tmp_path / "j" / "codebook")
    assert "base_model" not in cfg_j
    main(["codebook", "generate", str(tmp_path / "j"), "--code", "3", "--prompt", "the", "--max-new-tokens", "3"])
    out = capsys.readouterr().out
    tuned = load_model(str(tmp_path / "j" / "model"))
    assert any(not torch.equal(p, q) for p, q in zip(tuned.module.parameters(), m.module.parameters()))
    with forcing(tuned, site, layer_j, 3):
        want = tuned.generate(["the"], max_new_tokens=3)[0]
    assert f"code 3 forced (last): {want!r}" in out
    with pytest.raises(ValueError, match="k=9"):
        main(["codebook", "train", "tiny-llama", "--text", "x", "--codes", "8", "--k", "9", "--out", str(tmp_path)])
