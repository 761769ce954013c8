"""VISTA's token-ranking diagnostic and VSV interventions on tiny-llama: ranks under the logit lens agree with a
brute-force count, the final layer ranks the greedy token first, and the VSV edit dict is the documented hook."""
import torch

from actlab.steer.sla import (
    ContextSteer,
    early_logits,
    ranking_dynamics,
    token_ranks,
    vsv_interventions,
    vsv_vectors,
)


def test_ranking_dynamics_matches_brute_force(tiny):
    m = tiny("tiny-llama")
    toks, ranks = ranking_dynamics(m, "hello wor", max_new_tokens=5)
    assert len(toks) == 5 and ranks.shape == (m.n_layers, 5)
    assert bool((ranks[-1] == 0).all())  # the last block's lens (final norm + unembedding) is the model's output
    ids = m.tokenize(["hello wor"])["input_ids"][0].tolist()
    out = m.generate(["hello wor"], 5, return_ids=True)[0].tolist()  # greedy: the same continuation
    h = m.record({"input_ids": torch.tensor([out]), "attention_mask": torch.ones(1, len(out), dtype=torch.long)},
                 sites=["blocks.0.resid_post"])["blocks.0.resid_post"][0]
    for j in range(5):  # block 0's lens at the step that emitted token j: rank = how many logits beat it
        lg = early_logits(m, h[len(ids) - 1 + j])
        assert int(ranks[0, j]) == int((lg > lg[out[len(ids) + j]]).sum())
    r = token_ranks(m, "hello wor", out[len(ids)])
    assert torch.equal(r, ranks[:, 0])
    raw = token_ranks(m, "hello wor", out[len(ids)], final_norm=False)  # the reference code's raw unembedding
    assert raw.shape == r.shape


def test_vsv_interventions_are_the_context_steer_of_each_block(tiny):
    m = tiny("tiny-llama")
    ivs = vsv_interventions(m, ["the cat sat"], ["sat"], lam=0.1)
    v = vsv_vectors(m, ["the cat sat"], ["sat"])
    assert list(ivs) == list(v) == [f"blocks.{i}.mlp_out" for i in range(m.n_layers)]
    assert all(isinstance(x, ContextSteer) and x.lam == 0.1 and torch.equal(x.vector, v[s]) for s, x in ivs.items())
