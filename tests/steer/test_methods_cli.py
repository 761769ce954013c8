"""The method verbs of `actlab steer` (grains, refusal, vista, mote) on tiny models: the CLI writes what the library
computes, and bad input is refused naming what was expected."""
import json

import pytest
import torch

from actlab import clikit
from actlab.steer import Direction, grains
from actlab.steer.cli import register
from actlab.steer.inputs import read_triples


def main(argv):
    """`actlab <argv>` with only the steer family registered (other families' work in progress cannot break it);
    the full `actlab` parser is exercised by tests/test_cli.py."""
    ap = clikit.ArgumentParser(prog="actlab")
    register(clikit.subcommands(ap, dest="command"))
    a = ap.parse_args(argv)
    a.func(a)


def test_cli_grains_equals_library(tiny, tmp_path, capsys):
    rows = [{"prompt": "abAcd=", "preferred": "+", "dispreferred": "-"},
            {"prompt": "xyBzw=", "preferred": "+", "dispreferred": "-"}]
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    main(["steer", "grains", "tiny-llama", "--triples", str(f), "--k", "1", "--steps", "4", "--layers", "1",
          "--lam", "1,2", "--out", str(tmp_path / "g")])
    out = capsys.readouterr().out
    assert "blocks.1.resid_post" in out and "lam 2:" in out
    lib = grains(tiny("tiny-llama"), read_triples(f), k=1, steps=4, layers=[1])
    got = Direction.load(tmp_path / "g" / "blocks.1.resid_post")
    assert torch.allclose(got.vector, lib.vectors["blocks.1.resid_post"].vector, atol=1e-5)
    att = json.loads((tmp_path / "g" / "attributions.json").read_text())
    assert len(att["examples"]) == 2 and att["examples"][0]["tokens"][3] == "A"
    assert att["examples"][1]["top_pos"] == lib.top_pos[1]
    # the same triples from flags
    main(["steer", "grains", "tiny-llama", "--prompt", "abAcd=", "--prompt", "xyBzw=", "--preferred", "+",
          "--dispreferred", "-", "--k", "1", "--steps", "4", "--layers", "1", "--out", str(tmp_path / "g2")])
    assert torch.allclose(Direction.load(tmp_path / "g2" / "blocks.1.resid_post").vector, got.vector, atol=1e-6)


def test_read_triples_errors(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a", "preferred": "b"}\n')
    with pytest.raises(ValueError, match="line 1: expected"):
        read_triples(f)
    with pytest.raises(ValueError, match="give --triples"):
        read_triples(None)
    with pytest.raises(ValueError, match="one completion of each kind"):
        read_triples(None, ["a", "b", "c"], ["x", "y"], ["z"])
    assert read_triples(None, ["a", "b"], ["x"], ["z"]) == [("a", "x", "z"), ("b", "x", "z")]


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_inversion_rates_counts_replies():
    """inversion_rates appends the inversion question, generates with the chat template under the given
    interventions, and counts replies starting with 'Certainly' / 'No' (case and spaces ignored)."""
    import contextlib

    from actlab.steer.refusal import INVERSION_QUESTION, inversion_rates

    class Fake:
        def __init__(self):
            self.seen = {}

        @contextlib.contextmanager
        def intervene(self, ivs):
            self.seen["ivs"] = ivs
            yield

        def generate(self, prompts, max_new_tokens, chat):
            self.seen.update(prompts=prompts, chat=chat)
            return [" Certainly, it is.", "no", "Nope", "I think so", "certainly"]

    f = Fake()
    r = inversion_rates(f, list("abcde"), ivs=["X"])
    assert r == {"certainly": 0.4, "no": 0.4}  # "Nope" starts with "no" too: the reference's prefix match
    assert f.seen["prompts"][0] == "a" + INVERSION_QUESTION and f.seen["chat"] and f.seen["ivs"] == ["X"]


def test_cli_refusal(tiny, tmp_path, capsys, monkeypatch):
    from actlab import load_model
    from actlab.steer import refusal
    from actlab.steer.refusal import harm_refusal_directions, load_instructions

    m = load_model("tiny-llama")
    m.tokenizer.chat_template = CHATML
    monkeypatch.setattr(clikit, "model_from_args", lambda a: m)
    harmful = set(load_instructions("harmful"))
    # a random tiny model never prefers "I'm sorry": let the harmful ones count as refused (by the score judge)
    seen = []

    def fake_score(model, ins, ivs=None, prompt_only=False):
        seen.append(prompt_only)
        return torch.tensor([1.0 if x in harmful else -1.0 for x in ins])

    monkeypatch.setattr(refusal, "refusal_score", fake_score)
    main(["steer", "refusal", "tiny-llama", "--n", "3", "--layers", "1", "--judge", "score", "--effects",
          "--prompt-only", "--out", str(tmp_path / "r")])
    assert True in seen                                  # --prompt-only reaches the steered refusal measure
    out = capsys.readouterr().out
    assert "cos(d_harm, d_ref)" in out and "unsteered: refusal score" in out and "ablate on harmful" in out
    lib = harm_refusal_directions(m, load_instructions("harmful")[:3], load_instructions("harmless")[:3], [1],
                                  judge="score")
    got = Direction.load(tmp_path / "r" / "refusal" / "blocks.1.resid_pre")
    assert torch.allclose(got.vector, lib.refusal["blocks.1.resid_pre"].vector, atol=1e-5)
    monkeypatch.undo()
    monkeypatch.setattr(clikit, "model_from_args", lambda a: load_model("tiny-llama"))
    with pytest.raises(ValueError, match="no chat template"):
        main(["steer", "refusal", "tiny-llama", "--n", "2", "--layers", "1", "--judge", "score",
              "--out", str(tmp_path / "e")])


def test_cli_vista(tiny, capsys):
    from actlab.steer.sla import vsv_compare

    main(["steer", "vista", "tiny-llama", "--context", "the cat ", "--question", "sat on", "--target", "m",
          "--lam", "0.1", "--max-new-tokens", "3", "--ranks-tokens", "2", "--sla-layers", "0"])
    out = capsys.readouterr().out
    r = vsv_compare(tiny("tiny-llama"), "the cat ", "sat on", 0.1, "m")
    assert f"{r['kl_no_context']:.4f} without context, {r['kl_steered']:.4f} steered" in out
    assert "rank per layer,    steered: " + " ".join(str(x) for x in r["ranks_steered"]) in out
    assert "### plain: sat on" in out and "### steered: sat on" in out and out.count("rank per layer:") == 4
