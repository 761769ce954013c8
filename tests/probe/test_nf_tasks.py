"""Neurofeedback task machinery on a tiny chat-templated model: held-out queries never in their own context, labels
from the train split's median only, the prefix-cached log-prob scorer equal to a hand-computed full forward at the
label position, teacher-forced and sampled control states equal to a full forward over the same tokens, and the sign
of the control effect (target 1 minus target 0)."""
from __future__ import annotations

import random

import pytest
import torch

from actlab.probe.neurofeedback import project
from actlab.probe.nf_prompts import control_prompts, report_prompts, sample_context
from actlab.probe.nf_score import label_logprobs, sample_with_states, span_states
from actlab.probe.nf_tasks import bootstrap_effect, nf_implicit, nf_labels, nf_setup, split_indices

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SITE = "blocks.1.resid_post"
WORDS = ["red", "blue", "tall", "small", "cat", "dog", "sun", "rain", "old", "new", "fast", "slow"]


@pytest.fixture
def chat_tiny():
    from actlab import load_model

    m = load_model("tiny-gpt2")
    m.tokenizer.chat_template = CHATML
    return m


def _sentences(n: int = 24) -> tuple[list[str], list[int]]:
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))) + f" {i}" for i in range(n)]
    return texts, [i % 2 for i in range(n)]


def _full_last_logprobs(m, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return m.module(input_ids=torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)


@pytest.mark.parametrize("fmt", ["chat", "plain"])
def test_report_scorer_reads_the_label_position(chat_tiny, fmt):
    m = chat_tiny
    examples = [("red cat", 1), ("blue dog", 0), ("tall sun", 1)]
    queries = ["old rain", "a much longer query sentence here", "zq"]   # different lengths: right padding inside
    p = report_prompts(m.tokenizer, examples, queries, fmt)
    assert all(q not in p.prefix_text for q in queries)
    lp = label_logprobs(m, p.prefix, p.suffixes, p.label_ids, batch_size=2)
    for i, q in enumerate(queries):
        ids = p.prefix + p.suffixes[i]
        # the query rendered as one more labelled example starts with exactly prefix + suffix + that label's token
        as_example = report_prompts(m.tokenizer, examples + [(q, 1)], ["zz zz"], fmt).prefix
        assert as_example[:len(ids) + 1] == ids + [p.label_ids[1]]
        want = _full_last_logprobs(m, ids)[list(p.label_ids)]
        torch.testing.assert_close(lp[i], want, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="own in-context examples"):
        report_prompts(m.tokenizer, examples, ["blue dog"], fmt)


def test_context_comes_from_the_train_split_only(chat_tiny):
    texts, y = _sentences(24)
    states = torch.randn(24, 64, generator=torch.Generator().manual_seed(0))
    s = nf_setup(chat_tiny, texts, y, SITE, n_test=8, pcs=(1, 2), states=states)
    assert sorted(s.train + s.test) == list(range(24)) and not set(s.train) & set(s.test)
    assert sum(y[i] for i in s.test) == 4   # stratified by the dataset label
    for n in (0, 1, 4, 16):
        for seed in range(5):
            idx = sample_context(s.train, s.labels["lr"], n, random.Random(seed))
            assert len(set(idx)) == n and set(idx) <= set(s.train)
            assert abs(sum(int(s.labels["lr"][i]) for i in idx) - n / 2) <= 0.5   # label-balanced
    with pytest.raises(ValueError, match="train split has"):
        sample_context(s.train, s.labels["lr"], 17, random.Random(0))
    from actlab.probe.nf_tasks import _ctx

    train_texts = {texts[i] for i in s.train}
    for n in (4, 16):   # the contexts the tasks build (shuffled or not) hold train sentences only
        for seed in range(3):
            for shuffled in (False, True):
                ex = _ctx(s, "pc1", n, seed, shuffled)
                assert len(ex) == n and {t for t, _ in ex} <= train_texts
                assert sum(y for _, y in ex) == n // 2


def test_labels_from_the_train_median_only():
    g = torch.Generator().manual_seed(1)
    proj = torch.randn(40, generator=g)
    train, test = split_indices([i % 2 for i in range(40)], 10, seed=3)
    y, thr = nf_labels(proj, train)
    assert int(y[train].sum()) == len(train) // 2   # exactly balanced on the train split
    assert torch.equal(y[test], (proj[test] > thr).long())
    tr = proj[train].sort().values
    assert tr[len(train) // 2 - 1] < thr < tr[len(train) // 2]
    moved = proj.clone()
    moved[test] += 100.0   # held-out projections never move the threshold or the train labels
    y2, thr2 = nf_labels(moved, train)
    assert thr2 == thr and torch.equal(y2[train], y[train]) and int(y2[test].sum()) == len(test)


def test_lr_axis_points_to_the_dataset_label(chat_tiny):
    texts, y = _sentences(40)
    g = torch.Generator().manual_seed(2)
    u = torch.randn(64, generator=g)
    u /= u.norm()
    states = torch.randn(40, 64, generator=g) + 6.0 * torch.tensor(y, dtype=torch.float)[:, None] * u
    s = nf_setup(chat_tiny, texts, y, SITE, n_test=10, pcs=(1,), states=states)
    assert float(s.axes["lr"] @ u) > 0.5
    agree = (s.labels["lr"][s.test] == s.y_data[s.test]).float().mean()
    assert agree >= 0.8


def test_implicit_control_states_and_sign(chat_tiny):
    m = chat_tiny
    examples = [("red cat", 1), ("blue dog", 0)]
    given = ["old rain falls", "a new sun", "fast"]
    p0, p1 = (control_prompts(m.tokenizer, examples, t, given) for t in (0, 1))
    assert p0.prefix == p1.prefix and p0.spans == [len(m.tokenizer(s, add_special_tokens=False)["input_ids"])
                                                   for s in given]
    st = span_states(m, p0.prefix, p0.suffixes + p1.suffixes, p0.spans + p1.spans, SITE, batch_size=4)
    for i, (sfx, k) in enumerate(zip(p0.suffixes + p1.suffixes, p0.spans + p1.spans)):
        full = m.record(torch.tensor([p0.prefix + sfx]), SITE)[SITE][0]
        torch.testing.assert_close(st[i], full[-k:].mean(0), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(st[i], full[-k - 1:].mean(0), atol=1e-3)   # one position more differs
    # an axis along which target 1 moves the sentences' states (by hand): the pipeline's d is positive
    texts, y = _sentences(24)
    s = nf_setup(m, texts, y, SITE, n_test=8, pcs=(1,))
    from actlab.probe.nf_tasks import _ctx

    ex = _ctx(s, "lr", 0, 0, False)   # tiny-gpt2 has 512 byte positions
    given = [s.texts[i] for i in s.test[:6]]
    h = {}
    for t in (0, 1):
        p = control_prompts(m.tokenizer, ex, t, given)
        h[t] = torch.stack([m.record(torch.tensor([p.prefix + sf]), SITE)[SITE][0][-k:].mean(0)
                            for sf, k in zip(p.suffixes, p.spans)])
    s.axes["shift"], s.labels["shift"] = h[1].mean(0) - h[0].mean(0), s.labels["lr"]
    c = nf_implicit(m, s, "shift", (0,), (0,), n_given=6, n_boot=200)[0]
    assert c.d.value > 0 and c.mean_1 > c.mean_0
    assert c.mean_1 == pytest.approx(float(project(h[1], s.axes["shift"]).mean()), abs=1e-4)


def test_sampled_states_are_the_writers_states(chat_tiny):
    m = chat_tiny
    p = control_prompts(m.tokenizer, [("red cat", 1), ("blue dog", 0)], 1)
    nl = m.tokenizer("\n", add_special_tokens=False)["input_ids"]
    keep, toks, st = sample_with_states(m, p.prefix, p.suffixes * 3, SITE, max_new_tokens=6, temperature=1.0,
                                        stop_ids=nl, seed=0)
    assert keep and len(toks) == len(keep) == st.shape[0]
    for t, row in zip(toks, st):
        assert 1 <= len(t) <= 6 and not set(t) & set(nl)
        full = m.record(torch.tensor([p.prefix + p.suffixes[0] + t]), SITE)[SITE][0]
        torch.testing.assert_close(row, full[-len(t):].mean(0), atol=1e-4, rtol=1e-4)
    again = sample_with_states(m, p.prefix, p.suffixes * 3, SITE, max_new_tokens=6, temperature=1.0,
                               stop_ids=nl, seed=0)
    assert again[1] == toks   # seeded


def test_bootstrap_effect_brackets_planted_d():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(400, generator=g) + 1.0, torch.randn(400, generator=g)
    iv = bootstrap_effect(a, b, n_boot=300)
    assert iv.lo < iv.value < iv.hi and iv.lo < 1.0 < iv.hi and iv.lo > 0.7
    null = bootstrap_effect(torch.randn(30, generator=g), torch.randn(30, generator=g), paired=True, n_boot=300)
    assert null.lo < 0 < null.hi


def test_explicit_control_bookkeeping(chat_tiny, monkeypatch):
    """Planted writer states (+1 along the axis for target-1 rows, a dropped row): d, means and label_match follow
    the targets, not the row order."""
    import actlab.probe.nf_tasks as nft

    m = chat_tiny
    texts, y = _sentences(24)
    s = nf_setup(m, texts, y, SITE, n_test=8, pcs=(1,),
                 states=torch.randn(24, 64, generator=torch.Generator().manual_seed(5)))
    axis = s.axes["pc1"]
    g = torch.Generator().manual_seed(6)

    def planted(model, prefix, suffixes, site, **kw):
        n = len(suffixes)
        keep = [i for i in range(n) if i != 1]   # row 1 (target 0) stopped before writing
        digit1 = m.tokenizer("1", add_special_tokens=False)["input_ids"][0]
        tgt = torch.tensor([float(digit1 in suffixes[i]) for i in keep])
        st = 0.1 * torch.randn(len(keep), 64, generator=g) + tgt[:, None] * axis
        return keep, [[ord("a")] for _ in keep], st

    monkeypatch.setattr(nft, "sample_with_states", planted)
    c = nft.nf_explicit(m, s, "pc1", (0,), (0,), n_samples=5, n_boot=100)[0]
    assert c.n == (5, 4) and c.d.value > 3 and c.mean_1 - c.mean_0 == pytest.approx(1.0, abs=0.15)
    assert c.p < 0.05 and len(c.texts["1"]) == 5 and len(c.texts["0"]) == 4
