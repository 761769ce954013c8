"""MoEfication of a dense Llama into a Mixtral folder (the real-model MoTE run's substrate): balanced expert groups,
every neuron in exactly one expert, the folder equal to the dense model when every expert is selected, a top-k
router that follows the experts' predicted output norms, and MoTE switches acting on it."""
import pytest
import torch

from actlab import load_model
from actlab.steer.moefy import balanced_kmeans, moefy
from actlab.steer.mote import routing_frequencies, switch

TEXTS = [f"the {w} sat on the mat and the {v} ran to the {w}" for w in ("cat", "dog", "cow", "hen", "fox")
         for v in ("boy", "girl", "man", "crow")] * 3


def test_balanced_kmeans_groups_equal_and_similar_rows():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g)
    x = centres.repeat_interleave(6, 0) + 0.05 * torch.randn(24, 16, generator=g)
    a = balanced_kmeans(x[torch.randperm(24, generator=g)], 4)
    assert torch.bincount(a).tolist() == [6, 6, 6, 6]
    a = balanced_kmeans(x, 4)
    assert all(len(set(a[i * 6:(i + 1) * 6].tolist())) == 1 for i in range(4))   # planted clusters recovered
    with pytest.raises(ValueError, match="equal experts"):
        balanced_kmeans(x, 5)


def test_moefied_tiny_llama_equals_dense_with_all_experts(tmp_path, one_thread):
    m = load_model("tiny-llama")
    d_mlp = m.adapter.W_in(0).shape[1]
    rep = moefy(m, tmp_path / "all", TEXTS, n_experts=4, top_k=4, n_tokens=256, context_length=32)
    assert all(sorted(g.flatten().tolist()) == list(range(d_mlp)) for g in rep.groups)  # a partition of the neurons
    moe = load_model(str(tmp_path / "all"))
    assert moe.adapter.name == "mixtral" and moe.adapter.experts_per_token == 4
    enc = m.tokenize(["the cat sat on the mat", "a dog ran"])
    with torch.no_grad():
        dense, sparse = m(enc).logits, moe(enc).logits
    real = enc["attention_mask"].bool()                                       # padded positions hold no token
    assert torch.allclose(dense[real], sparse[real], atol=1e-3 * float(dense.abs().max()))
    # top-2 of 4: a different function, but close to the dense one (the router keeps the experts that matter)
    moefy(m, tmp_path / "two", TEXTS, n_experts=4, top_k=2, n_tokens=256, context_length=32)
    two = load_model(str(tmp_path / "two"))
    with torch.no_grad():
        half = two(enc).logits
    assert not torch.allclose(dense[real], half[real], atol=1e-3)
    # the router's choice beats the worst choice: forcing the router's least-favoured experts moves further away
    with torch.no_grad():
        p = dense[real].log_softmax(-1).exp()
        kl = lambda lg: float((p * (dense[real].log_softmax(-1) - lg[real].log_softmax(-1))).sum(-1).mean())
        freq = routing_frequencies(two, ["the cat sat on the mat", "a dog ran"])
        worst = [(layer, int(e)) for layer in range(m.n_layers) for e in freq[layer].argsort()[:2]]
        with two.intervene(switch(two, worst, "on")):
            forced = two(enc).logits
    assert kl(half) < kl(forced)
    with pytest.raises(ValueError, match="top_k"):
        moefy(m, tmp_path / "x", TEXTS, n_experts=4, top_k=5)


def test_cli_moefy_writes_what_the_library_writes(tmp_path, capsys, one_thread):
    from safetensors.torch import load_file

    from actlab import clikit
    from actlab.steer.cli import register

    ap = clikit.ArgumentParser(prog="actlab")
    register(clikit.subcommands(ap, dest="command"))
    f = tmp_path / "t.txt"
    f.write_text("\n".join(TEXTS))
    a = ap.parse_args(["steer", "moefy", "tiny-llama", "--file", str(f), "--experts", "4", "--top-k", "2",
                       "--tokens", "256", "--out", str(tmp_path / "cli")])
    a.func(a)
    assert "4 experts per block, top-2" in capsys.readouterr().out
    moefy(load_model("tiny-llama"), tmp_path / "lib", TEXTS, n_experts=4, top_k=2, n_tokens=256)
    got, want = load_file(tmp_path / "cli" / "model.safetensors"), load_file(tmp_path / "lib" / "model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
