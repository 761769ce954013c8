"""Sweep (layers x strengths, concept vs fluency, plot, best pick) and the `actlab steer` CLI on tiny-llama."""
import importlib
import math
import json

import pytest
import torch

from actlab import load_interventions
from actlab.cli import main
from actlab.steer import Direction
from actlab.steer.evaluate import KeywordScorer, kl_on_neutral, completion_perplexity
from actlab.steer.sweep import load_sweep, sweep


def cli_error(capsys, argv, text):
    """The CLI refuses: ``error: <text...>`` on stderr with exit status 2 (or the library error itself)."""
    with pytest.raises((SystemExit, ValueError, FileNotFoundError)) as ei:
        main(argv)
    if isinstance(ei.value, SystemExit) and ei.value.code == 2:
        err = capsys.readouterr().err
        assert "error:" in err and text in err
    else:
        assert text in str(ei.value)


def z_direction(m, site):
    z = m.tokenizer("Z", add_special_tokens=False)["input_ids"][0]
    u = torch.nn.functional.normalize(m.module.lm_head.weight[z].detach().clone(), dim=0)
    return Direction(vector=u, site=site, model=m.name, norms={"vector": 1.0, "resid_median": 1.0},
                     meta={"n_layers": m.n_layers})


def test_sweep_scores_plots_and_picks(tiny, tmp_path):
    m = tiny("tiny-llama")
    dirs = [z_direction(m, "blocks.0.resid_post"), z_direction(m, "blocks.1.resid_post")]
    prompts = ["hello", "the cat", "abc"]
    res = sweep(m, dirs, prompts, KeywordScorer(["Z"], regex=True), strengths=[0.02, 4.0], scale="unit",
                max_new_tokens=6, max_ppl_ratio=1e6)
    assert len(res.rows) == 4 and res.baseline.concept == 0.0
    strong = [r for r in res.rows if r.strength == 4.0 and r.site == "blocks.1.resid_post"][0]
    weak = [r for r in res.rows if r.strength == 0.02 and r.site == "blocks.1.resid_post"][0]
    assert strong.concept > weak.concept and strong.concept >= 3  # the concept (token Z) appears when steered
    assert strong.kl > weak.kl > 0
    assert res.best is not None and res.best.concept == max(r.concept for r in res.rows)
    folder = res.save(tmp_path / "sw")
    assert (folder / "tradeoff.png").stat().st_size > 1000
    assert load_sweep(folder)["best"]["site"] == res.best.site
    # the best setting is saved on its own: site, strength (with units), scores, and how it was chosen
    best = json.loads((folder / "best.json").read_text())
    assert best["best"]["site"] == res.best.site and best["best"]["strength"] == res.best.strength
    assert best["best"]["scale"] == "unit" and best["best"]["concept"] == res.best.concept
    assert best["best"]["ppl"] == res.best.ppl and best["best"]["kl"] == res.best.kl
    ok = [r for r in res.rows if r.ppl <= 1e6 * res.baseline.ppl and r.concept > res.baseline.concept]
    assert best["chosen_by"]["qualifying_settings"] == len(ok) and best["chosen_by"]["max_ppl_ratio"] == 1e6
    assert "highest concept score" in best["chosen_by"]["rule"]
    # ... with its direction and a replayable interventions file at that strength
    d = Direction.load(folder / "best_direction")
    assert d.site == res.best.site and torch.equal(d.vector, dirs[1 if d.site.startswith("blocks.1") else 0].vector)
    (site, iv), = load_interventions(folder / "best_interventions.json")
    assert site == res.best.site and iv.alpha == res.best.strength
    # the plot labels every point with its strength
    import matplotlib.pyplot as plt

    fig = res.figure()
    labels = sorted(t.get_text() for t in fig.axes[0].texts)
    plt.close(fig)
    assert labels == sorted(["0.02", "4"] * 2)
    # a tight fluency bound excludes the settings that break the text
    tight = sweep(m, dirs[1:], prompts, KeywordScorer(["Z"], regex=True), strengths=[4.0], scale="unit",
                  max_new_tokens=6, max_ppl_ratio=1e-3)
    assert tight.best is None
    tight.save(tmp_path / "tight", plot=False)
    nb = json.loads((tmp_path / "tight" / "best.json").read_text())
    assert nb["best"] is None and nb["chosen_by"]["qualifying_settings"] == 0
    assert not (tmp_path / "tight" / "best_direction").exists()


def test_perplexity_and_kl(tiny):
    m = tiny("tiny-llama")
    p = completion_perplexity(m, ["ab", "hello"], ["cd", "x"])
    assert p.n_tokens == 3 and 1 < p.ppl < 1e4 and len(p.per_text) == 2
    assert kl_on_neutral(m, [], ["hello"]) == 0.0
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        completion_perplexity(m, ["a", "b"], ["c"])
    with pytest.raises(ValueError, match="at least one keyword"):
        KeywordScorer([])
    k = KeywordScorer(["ocean", "sea"])
    assert k.per_text(["The OCEAN and the Sea", "seashell, oceanic", "nothing"]) == [2.0, 2.0, 0.0]
    assert k(["The OCEAN and the Sea", "nothing"]) == 1.0  # mean matches per text; words match at their start


def test_cli_extract_apply_generate_sweep(tiny, tmp_path, capsys):
    pos, neg, prompts = tmp_path / "pos.txt", tmp_path / "neg.txt", tmp_path / "prompts.txt"
    pos.write_text("ZZZ zz\nZ Z Z\nzzZZ\n")
    neg.write_text("abc def\nhello\nqrs tuv\n")
    prompts.write_text("hello\nthe cat\n")
    main(["steer", "extract", "tiny-llama", "--positive", str(pos), "--negative", str(neg), "--layers", "1",
          "--position", "mean", "--out", str(tmp_path / "d")])
    assert "blocks.1.resid_post" in capsys.readouterr().out
    assert json.loads((tmp_path / "d" / "direction.json").read_text())["site"] == "blocks.1.resid_post"
    from actlab.steer import extract

    py = extract(tiny("tiny-llama"), pos.read_text().splitlines(), neg.read_text().splitlines(),
                 "blocks.1.resid_post", position="mean")["blocks.1.resid_post"]
    assert torch.allclose(Direction.load(tmp_path / "d").vector, py.vector, atol=1e-6)  # the CLI = the library
    main(["steer", "apply", str(tmp_path / "d"), "--alpha", "3", "--out", str(tmp_path / "s.json")])
    assert "actlab generate" in capsys.readouterr().out
    main(["generate", "tiny-llama", "--prompt", "hello", "--intervention", str(tmp_path / "s.json"),
          "--max-new-tokens", "5"])
    replay = capsys.readouterr().out
    main(["steer", "generate", "tiny-llama", "--prompt", "hello", "--direction", str(tmp_path / "d"), "--alpha", "3",
          "--max-new-tokens", "5"])
    assert capsys.readouterr().out == replay
    main(["steer", "generate", "tiny-llama", "--prompt", "hello", "--sla-layers", "0", "--max-new-tokens", "3"])
    assert "### hello" in capsys.readouterr().out
    main(["steer", "sweep", "tiny-llama", "--positive", str(pos), "--negative", str(neg), "--layers", "1",
          "--prompts", str(prompts), "--keywords", "Z", "--strengths", "1", "8", "--max-new-tokens", "4",
          "--max-ppl-ratio", "1e6", "--out", str(tmp_path / "sw")])
    assert (tmp_path / "sw" / "sweep.json").exists() and "unsteered" in capsys.readouterr().out
    best = json.loads((tmp_path / "sw" / "best.json").read_text())
    assert best["chosen_by"]["settings"] == 2  # tiny-llama's random text rarely says "Z": best may be None
    assert (best["best"] is None) != (tmp_path / "sw" / "best_interventions.json").exists()
    main(["steer", "apply", str(tmp_path / "d"), "--model", "tiny-llama", "--orthogonalize", str(tmp_path / "o")])
    assert (tmp_path / "o" / "config.json").exists()
    cli_error(capsys, ["steer", "extract", "tiny-llama", "--positive", str(pos), "--out", str(tmp_path / "e")],
              "give --pairs")
    cli_error(capsys, ["steer", "extract", "tiny-llama", "--positive", str(tmp_path / "nope.txt"), "--negative",
                       str(neg), "--out", str(tmp_path / "e")], "does not exist")
    with pytest.raises(SystemExit):
        main(["steer", "extract", "--help"])
    assert "--position" in capsys.readouterr().out


def test_batched_strengths_equal_one_setting_per_call(tiny):
    """Strengths side by side in one batch (per-row alpha) give the rows that one call per setting gives."""
    m = tiny("tiny-llama")
    dirs = [z_direction(m, "blocks.1.resid_post")]
    prompts = ["hello", "the cat", "abc"]
    kw = dict(strengths=[0.0, 1.0, 4.0], scale="unit", max_new_tokens=6, max_ppl_ratio=1e6)
    batched = sweep(m, dirs, prompts, KeywordScorer(["Z"], regex=True), batch_size=9, **kw)
    single = sweep(m, dirs, prompts, KeywordScorer(["Z"], regex=True), batch_size=3, **kw)
    for a, b in zip(batched.rows, single.rows):
        assert (a.site, a.strength, a.sample, a.n_tokens) == (b.site, b.strength, b.sample, b.n_tokens)
        assert a.concept == b.concept and a.ppl == pytest.approx(b.ppl, rel=1e-4)
        assert a.kl == pytest.approx(b.kl, rel=1e-3, abs=1e-7)
    # and each row equals the plain per-setting path: generate + perplexity + kl_on_neutral under intervene
    r = single.rows[2]
    with m.intervene(dirs[0].to_interventions(4.0, scale="unit")):
        texts = m.generate(prompts, max_new_tokens=6)
    assert r.sample == texts[0][:200]
    assert r.ppl == pytest.approx(completion_perplexity(m, prompts, texts).ppl, rel=1e-4)
    assert r.kl == pytest.approx(kl_on_neutral(m, dirs[0].to_interventions(4.0, scale="unit"), prompts), rel=1e-3)
    assert single.rows[0].kl == 0.0 and single.rows[0].concept == single.baseline.concept


def test_per_row_alpha(tiny):
    """Add/NormPreservingAdd/PromptAdd with a [B] alpha equal running each row with its own scalar alpha."""
    from actlab.core import Add
    from actlab.steer.apply import NormPreservingAdd, PromptAdd

    m = tiny("tiny-llama")
    enc = m.tokenize(["hello there", "ab", "the cat sat"])
    v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(0))
    alphas = torch.tensor([0.0, 1.5, -2.0])
    for cls in (Add, NormPreservingAdd, PromptAdd):
        with m.intervene({"blocks.0.resid_post": cls(v, alpha=alphas)}):
            got = m(enc).logits
        for i, a in enumerate(alphas.tolist()):
            with m.intervene({"blocks.0.resid_post": cls(v, alpha=a)}):
                want = m(enc).logits[i]
            torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"Add.alpha has shape \(2,\); expected a float or \[3\]"):
        with m.intervene({"blocks.0.resid_post": Add(v, alpha=torch.ones(2))}):
            m(enc)


def test_kl_without_cached_base_is_the_same(tiny, monkeypatch):
    """Neutral prompts too many to cache their plain log-probabilities: the KL is computed per batch, unchanged."""
    S = importlib.import_module("actlab.steer.sweep")  # the module (actlab.steer.sweep is also the function)

    m = tiny("tiny-llama")
    dirs = [z_direction(m, "blocks.1.resid_post")]
    kw = dict(strengths=[1.0, 4.0], scale="unit", max_new_tokens=4, max_ppl_ratio=1e6, batch_size=3)
    cached = sweep(m, dirs, ["hello", "abc"], KeywordScorer(["Z"], regex=True), **kw)
    monkeypatch.setattr(S, "BASE_LP_BYTES", 0)
    fresh = sweep(m, dirs, ["hello", "abc"], KeywordScorer(["Z"], regex=True), **kw)
    assert [r.kl for r in fresh.rows] == pytest.approx([r.kl for r in cached.rows], rel=1e-5)
    assert all(r.kl > 0 for r in fresh.rows)


def test_pick_best_rule():
    """Highest concept among settings within the perplexity bound that beat the unsteered score; ties: lower ppl."""
    from actlab.steer.sweep import SweepRow, pick_best, qualifying

    def row(site, strength, concept, ppl):
        return SweepRow(site, strength, concept, ppl, 0.0, 0.0, 1)

    base = row("none", 0.0, 0.5, 10.0)
    rows = [row("a", 1, 0.4, 11), row("a", 2, 2.0, 15), row("a", 4, 9.0, 50),  # 9.0 breaks the bound (2x)
            row("b", 1, 2.0, 12), row("b", 2, 1.0, 19)]
    assert pick_best(rows, base, 2.0) is rows[3]  # concept 2.0 twice: the lower perplexity wins
    assert [r.strength for r in qualifying(rows, base, 2.0)] == [2, 1, 2]
    assert pick_best(rows, base, 10.0) is rows[2]
    assert pick_best(rows, row("none", 0.0, 9.0, 10.0), 10.0) is None


def test_completion_perplexity_by_hand(tiny):
    """Perplexity = exp(mean -log p(completion token | everything before)), checked against one plain forward."""
    m = tiny("tiny-llama")
    p = completion_perplexity(m, ["hello", "ab"], [" world", "cde"], batch_size=2)
    for prompt, comp, got in zip(["hello", "ab"], [" world", "cde"], p.per_text):
        a = m.tokenizer(prompt)["input_ids"]
        b = m.tokenizer(comp, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = m(torch.tensor([a + b])).logits[0].float().log_softmax(-1)
        nll = -sum(float(lp[len(a) - 1 + j, t]) for j, t in enumerate(b))
        assert got == pytest.approx(math.exp(nll / len(b)), rel=1e-5)
    assert p.n_tokens == 6 + 3
