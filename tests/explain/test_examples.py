"""Examples on planted latents: windows, samplers (spec §4), disjoint train/test, negatives, BPE-safe decoding."""
from __future__ import annotations

import random

import pytest
import torch

from actlab.explain.examples import ExampleConfig, activating_windows, build_examples, sample
from actlab.explain.text import highlight, token_pieces

from .planted import APPLE, WordTokenizer, planted_cache


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_cache(tmp_path_factory.mktemp("pc") / "c")


def _rows(x):
    return set(range(x.start, x.start + len(x.tokens)))


def test_windows_contain_the_activating_token(planted):
    c, x, _tok = planted
    wins = activating_windows(c, 0)
    assert len(wins) > 20
    seen = set()
    for w in wins:
        assert len(w.tokens) == 32
        assert w.tokens[w.focus] == APPLE and w.max_act > 0
        assert w.acts == x[w.start: w.start + 32, 0].tolist()
        assert len({int(d) for d in c.row_table("doc")[w.start: w.start + 32]}) == 1   # never crosses a document
        assert not seen & _rows(w)
        seen |= _rows(w)
    assert [w.max_act for w in wins] == sorted((w.max_act for w in wins), reverse=True)
    # the peak sits `after` tokens before the window end unless the document ends sooner
    inner = [w for w in wins if w.start % 100 + 32 < 100 and w.start % 100 > 0]
    assert all(w.focus == 32 - 1 - 8 for w in inner)


def test_samplers(planted):
    c, _, _ = planted
    wins = activating_windows(c, 0, ExampleConfig(n_quantiles=10))
    rng = random.Random(0)
    top = sample(wins, 10, "top", rng)
    assert sorted(w.max_act for w in top) == sorted(w.max_act for w in wins)[-10:]
    q = sample(wins, 20, "quantiles", rng, 10)
    assert {w.quantile for w in q} == set(range(10))           # every non-empty bin
    counts = [sum(w.quantile == b for w in q) for b in range(10)]
    assert counts == [2] * 10
    ranked = sorted(wins, key=lambda w: w.max_act)              # equal-count bins by rank, not by value
    sizes = [sum(w.quantile == b for w in wins) for b in range(10)]
    assert max(sizes) - min(sizes) <= 1
    assert [w.quantile for w in ranked] == sorted(w.quantile for w in ranked)
    r = sample(wins, 15, "random", rng)
    assert len({id(w) for w in r}) == 15


def test_train_test_disjoint_and_negatives(planted):
    c, x, _ = planted
    s = build_examples(c, 0, ExampleConfig(n_train=15, n_test=15, n_non_activating=20))
    assert len(s.train) == 15 and len(s.test) == 15
    tr = set().union(*map(_rows, s.train))
    assert not tr & set().union(*map(_rows, s.test))
    assert len(s.non_activating) == 20
    for n in s.non_activating:
        assert n.kind == "random" and not any(n.acts) and not x[n.start: n.start + len(n.tokens), 0].any()
    # neighbour negatives: latent 1 (numbers) is latent 0's nearest decoder direction
    dec = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]])
    s = build_examples(c, 0, ExampleConfig(negatives="neighbour", n_neighbours=1, n_non_activating=10), dec)
    assert len(s.non_activating) == 10
    for n in s.non_activating:
        assert n.kind == "neighbour" and n.source_latent == 1 and not any(n.acts)
        assert x[n.start: n.start + len(n.tokens), 1].any()
    capped = build_examples(c, 0, ExampleConfig(max_examples=12, n_train=5, n_test=5))
    assert capped.n_candidates == 12
    top12 = sorted(w.max_act for w in activating_windows(c, 0))[-12:]
    assert min(x.max_act for x in capped.train + capped.test) >= top12[0]
    with pytest.raises(ValueError, match="decoder"):
        build_examples(c, 0, ExampleConfig(negatives="neighbour"))


def test_token_pieces_byte_level():
    from actlab.models import byte_tokenizer

    tk = byte_tokenizer()
    text = "café ☕ 日本 ok"
    ids = tk(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode())                        # one token per byte: characters are split
    pieces, group = token_pieces(tk, ids)
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    i = text.encode().index("☕".encode())
    assert pieces[i] == "☕" and pieces[i + 1] == pieces[i + 2] == "" and group[i + 2] == i
    marked = [False] * len(ids)
    marked[i + 1] = True                                          # a byte in the middle marks the whole character
    assert highlight(pieces, group, marked) == "café <<☕>> 日本 ok"
    marked[i + 3] = True                                          # the character and the space after: one span
    assert highlight(pieces, group, marked) == "café <<☕ >>日本 ok"


def test_windows_stop_at_a_document_change(tmp_path):
    """A new document whose positions happen to continue the previous one's still starts a new window."""
    from actlab.explain import CacheConfig, NeuronLatents, TensorRows, build_cache

    x = torch.zeros(200, 1)
    x[[10, 60, 110, 160], 0] = 1.0
    c = build_cache(TensorRows(x, torch.arange(200) % 7, torch.arange(200) // 50, torch.arange(200)),
                    NeuronLatents(1, "s"), tmp_path / "c", CacheConfig(progress=False))
    for w in activating_windows(c, 0, ExampleConfig(ctx_len=48, after=40)):
        assert len({int(d) for d in c.row_table("doc")[w.start: w.start + len(w.tokens)]}) == 1


def test_highlight_merges_contiguous_spans():
    tk = WordTokenizer()
    pieces, group = token_pieces(tk, [0, 13, 13, 5, 13])
    assert highlight(pieces, group, [False, True, True, False, True]) == " the<< apple apple>> grows<< apple>>"
