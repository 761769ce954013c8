"""Inputs the core refuses or adapts clearly: over the context, empty prompts, position slices and lists."""
import copy

import pytest
import torch

from actlab.models import Model

LONG = "x" * 600  # 601 tokens with <bos>; the tiny models' context is 512


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_input_over_the_context_is_refused_clearly(tiny, name):
    m = tiny(name)
    msg = "input of 601 tokens exceeds the model's context of 512"
    with pytest.raises(ValueError, match=msg):
        m.record(LONG, ["blocks.0.resid_post"])
    with pytest.raises(ValueError, match=msg):
        m(LONG)
    with pytest.raises(ValueError, match=msg):
        m.run_with_cache(LONG, ["blocks.0.resid_post"])
    with pytest.raises(ValueError, match="input of 510 tokens plus 4 new tokens exceeds the model's context of 512"):
        m.generate("x" * 509, max_new_tokens=4)
    m.generate("x" * 507, max_new_tokens=4)  # just fits: no error
    step = {"input_ids": torch.tensor([[5]]), "attention_mask": torch.ones(1, 513, dtype=torch.long)}
    with pytest.raises(ValueError, match="input of 513 tokens exceeds"):   # a cached step: the mask covers the past
        m(step)


def test_truncate_cuts_with_a_warning(tiny):
    m = tiny("tiny-gpt2")
    with pytest.warns(UserWarning, match="602 tokens exceeds the model's context of 512: truncated to 512"):
        acts = m.record(LONG + "y", ["blocks.0.resid_post"], truncate=True)
    assert acts["blocks.0.resid_post"].shape == (1, 512, 64)
    ref = m.record(m.tokenize(LONG, max_length=512), ["blocks.0.resid_post"])  # the start is kept
    torch.testing.assert_close(acts["blocks.0.resid_post"], ref["blocks.0.resid_post"])
    with pytest.warns(UserWarning, match="less 4 new tokens: truncated to 508 tokens \\(kept the end\\)"):
        ids = m.generate("z" * 600 + "!", max_new_tokens=4, min_new_tokens=4, return_ids=True, truncate=True)
    assert ids.shape == (1, 512)
    assert m.tokenizer.decode(ids[0, 507]) == "!"  # the prompt's last token survived


def _no_bos(m):
    tok = copy.deepcopy(m.tokenizer)
    tok._tokenizer.post_processor = None  # like GPT-2's tokenizer: "" gives no tokens at all
    return Model(m.module, tok, name=m.name + "-nobos")


def test_empty_prompts_give_a_value_error(tiny):
    m = tiny("tiny-gpt2")
    with pytest.raises(ValueError, match="empty list"):
        m.tokenize([])
    with pytest.raises(ValueError, match="empty list"):
        m.record([], ["blocks.0.resid_post"])
    with pytest.raises(ValueError, match="empty list"):
        m.generate([], max_new_tokens=2)
    nb = _no_bos(m)
    assert nb.tokenize("")["input_ids"].shape == (1, 0)
    with pytest.raises(ValueError, match="empty input"):
        nb.record("", ["blocks.0.resid_post"])
    with pytest.raises(ValueError, match="empty input"):
        nb.generate("", max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt 1 of the batch is empty"):
        nb.record(["abc", ""], ["blocks.0.resid_post"])
    with pytest.raises(ValueError, match="empty input"):
        m.record(torch.zeros(1, 0, dtype=torch.long), ["blocks.0.resid_post"])


@pytest.mark.parametrize("sel", [slice(2, 5), [1, 3], [0, -1], slice(-3, None)])
def test_record_positions_slice_and_list(tiny, sel):
    """Slices and lists give the selected real tokens of each row, flattened row by row: ``[n, d]``."""
    m = tiny("tiny-llama")
    texts = ["a longer sentence here", "tiny"]
    enc = m.tokenize(texts)
    site = "blocks.1.resid_post"
    full = m.record(enc, [site])[site]
    got = m.record(enc, [site], positions=sel)[site]
    with m.recording([site], positions=sel) as rec, torch.no_grad():
        m(enc)
    lengths = enc["attention_mask"].sum(1).tolist()
    p = full.shape[1]
    rows = []
    for b, n in enumerate(lengths):
        idx = list(range(n))[sel] if isinstance(sel, slice) else [list(range(n))[i] for i in sel]
        rows += [full[b, p - n + i] for i in sorted(idx)]
    want = torch.stack(rows)
    assert got.shape == want.shape == (len(rows), 64)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(rec[site], want)
