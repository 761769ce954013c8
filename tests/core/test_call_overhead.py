"""Per-call overhead: positions are computed only when a handler reads them, the device lookup is cached per module
(and stays true when the module moves), and the results are those of the full bookkeeping."""
from __future__ import annotations

import copy

import torch


def test_positions_only_when_read(tiny, position_calls):
    m = tiny("tiny-gpt2")
    calls = position_calls
    enc = m.tokenize(["hello there", "hi"])
    m.record(enc, [f"blocks.{i}.resid_post" for i in range(m.n_layers)], stop_early=False)
    assert calls == []                                   # 'all': nobody read positions
    last = m.record(enc, ["blocks.0.resid_post", "blocks.1.resid_post"], positions="last")
    assert calls == [0]                                  # read once per forward call, shared by both sites
    full = m.record(enc, ["blocks.0.resid_post"])["blocks.0.resid_post"]
    mask = enc["attention_mask"].bool()
    idx = torch.where(mask, torch.arange(mask.shape[1]), -1).amax(1)          # each row's last real token
    torch.testing.assert_close(last["blocks.0.resid_post"], full[torch.arange(2), idx])


def test_ctx_step_counts_decode_steps(tiny):
    m = tiny("tiny-gpt2")
    seen = []
    with m.hooks({"blocks.0.resid_post": lambda a, ctx: seen.append((ctx.step, ctx.info.past, a.shape[1]))}):
        m.generate("hello there", max_new_tokens=3, min_new_tokens=3)
    assert [s for s, _, _ in seen] == [0, 1, 2]
    assert seen[0][1] == 0 and seen[1][1] == seen[0][2]     # the first decode step follows the prompt


def test_device_and_dtype_follow_the_module(tiny):
    m = copy.deepcopy(tiny("tiny-gpt2"))
    assert m.device == torch.device("cpu") and m.dtype == torch.float32
    m.module.to(torch.float64)
    assert m.dtype == torch.float64                        # cached parameter, current dtype
    m.module = copy.deepcopy(m.module).to(torch.float32)   # a new module object: looked up again
    assert m.dtype == torch.float32


def test_mask_edited_in_place_is_checked_again(tiny):
    """The all-ones test of the attention mask is remembered per tensor and version: an in-place edit of the same
    mask (left padding added) must bring back the position ids that follow it."""
    m = tiny("tiny-llama")
    ids = torch.randint(3, 200, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    enc = {"input_ids": ids, "attention_mask": mask}
    m.record(enc, ["blocks.1.resid_post"])            # all ones: remembered
    mask[1, :2] = 0                                   # the same tensor, now left-padded
    got = m.record(enc, ["blocks.1.resid_post"])["blocks.1.resid_post"]
    fresh = m.record({"input_ids": ids, "attention_mask": mask.clone()}, ["blocks.1.resid_post"])["blocks.1.resid_post"]
    assert torch.equal(got, fresh)
    alone = m.record({"input_ids": ids[1:, 2:]}, ["blocks.1.resid_post"])["blocks.1.resid_post"]
    torch.testing.assert_close(got[1, 2:], alone[0], rtol=1e-5, atol=1e-5)   # padding changes nothing
