"""The grown-batch sweep (one base row per forward, cells appended where their sites are reached) gives the numbers
of the one-row-per-cell sweep on every tiny causal architecture, heads and a left-padded pair included."""
import pytest
import torch

from actlab.models.tiny import TINY
from actlab.patch import LogitDiff, make_pairs
from actlab.patch.activation import Cell, can_grow, run_cells, run_cells_grown

CAUSAL = [n for n in TINY if n != "tiny-bert"]


@pytest.mark.parametrize("name", CAUSAL)
def test_grown_sweep_equals_row_per_cell(tiny, name):
    m = tiny(name)
    ids = m.tokenizer("x y")["input_ids"]
    met = LogitDiff(ids[-2], ids[-1])
    pairs = make_pairs(m, ["the cat sat on", "a much longer prompt about the cat"],
                       ["the bat sat on", "a much longer prompt about the bat"])
    sites = ["blocks.0.resid_pre", "blocks.0.attn_out", "blocks.0.mlp_out", "blocks.1.resid_mid" if "blocks.1.resid_mid" in m.sites else "blocks.1.mlp_in",
             "blocks.1.resid_post"]
    src = m.record(pairs.inputs("clean"), sites + ["blocks.1.attn.z"])
    cells = [Cell(s, (j,)) for s in sites for j in range(pairs.width)]
    cells += [Cell(s, (j, j - 1)) for s in sites[:2] for j in (3, pairs.width - 1)]   # two columns at once
    cells += [Cell("blocks.1.attn.z", (j,), h) for j in (2, pairs.width - 1) for h in range(2)]
    assert can_grow(m, [c.site for c in cells])
    grown = run_cells_grown(m, pairs, cells, met, src, base="corrupt", batch_size=7)
    assert grown is not None, f"{name}: the forward did not carry the grown batch"
    plain = run_cells(m, pairs, cells, met, src, base="corrupt", batch_size=7, grow=False)
    torch.testing.assert_close(grown, plain, atol=2e-5, rtol=1e-5)
    assert grown[:, 0].std() > 1e-4                     # the cells differ: not a constant that matches by accident


def test_sites_outside_blocks_do_not_grow(tiny):
    m = tiny("tiny-llama")
    assert not can_grow(m, ["embed", "blocks.0.resid_pre"])
    assert not can_grow(m, ["blocks.0.attn.pattern"])


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_last_logits_unembeds_one_contiguous_column(tiny, name):
    """The unembedding sees a contiguous [rows, 1, d] (one GEMM), not HF's strided [:, -1:] view that F.linear
    turns into a bmm against the unembedding expanded once per row; the logits are the full forward's last column."""
    from actlab.patch.common import last_logits
    m = tiny(name)
    enc = m.tokenize(["the cat sat on", "a much longer prompt about the cat"])
    seen = []
    with m.module_hook("lm_head", lambda mod, args: seen.append((args[0].is_contiguous(), tuple(args[0].shape))),
                       kind="pre"):
        got = last_logits(m, enc)
    assert seen == [(True, (2, 1, m.d_model))]
    with torch.no_grad():
        torch.testing.assert_close(got, m(enc).logits[:, -1], atol=1e-5, rtol=1e-5)
