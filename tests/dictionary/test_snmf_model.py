"""Semi-NMF features of a model's MLP, on tiny-llama with a planted feature: the token 'Z' drives neurons 0-3 of
block 0's MLP, whose output columns write the unembedding direction of 'Q'. The fitted feature must be described by
its inputs (contexts ending in 'Z') and its outputs ('Q' promoted), and steering with it must add exactly
alpha times a unit vector to the MLP activation (spec §5 sanity check) and raise p('Q')."""
import random

import pytest
import torch

from actlab import load_model
from actlab.dictionary.snmf_model import SNMFFeatures, fit

LETTERS = "abcdefghijklmnop"


@pytest.fixture(scope="module")
def planted():
    m = load_model("tiny-llama")
    z, q = (m.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in "ZQ")
    rng = random.Random(0)
    texts = ["".join(rng.choice(LETTERS) for _ in range(12)) for _ in range(24)]
    texts = [t[:i] + "Z" + t[i:] for t, i in zip(texts, [rng.randrange(12) for _ in texts])]
    acts = m.record(texts, sites=["blocks.0.mlp_in"])["blocks.0.mlp_in"]
    ids = m.tokenize(texts)["input_ids"]
    real = m.tokenize(texts)["attention_mask"].bool()
    w = torch.nn.functional.normalize(acts[ids == z].mean(0) - acts[real & (ids != z)].mean(0), dim=0)
    mlp = m.module.model.layers[0].mlp
    wq = torch.nn.functional.normalize(m.module.lm_head.weight[q].detach().clone(), dim=0)
    with torch.no_grad():
        mlp.gate_proj.weight[:4] = 1.0 * w
        mlp.up_proj.weight[:4] = 1.0 * w
        mlp.down_proj.weight[:, :4] = 0.1 * wq[:, None]
        m.module.lm_head.weight[q] = 3 * wq  # a readable token (random rows have norm ~0.16)
    return m, texts


def feature_of_z(f: SNMFFeatures) -> int:
    on_z = torch.tensor([c.endswith("Z") for c in f.contexts])
    return int((f.G[on_z].mean(0) / f.G.mean(0).clamp_min(1e-9)).argmax())


def test_describe_and_steer(planted, tmp_path):
    m, texts = planted
    f = fit(m, texts, 0, K=6, restarts=1, iters=60, sparsity=0.04)
    assert f.F.shape == (m.adapter.d_mlp, 6) and f.G.shape[0] == len(f.contexts) and bool((f.G >= 0).all())
    k = feature_of_z(f)
    assert all(c.endswith("Z") for _, c in f.top_contexts(k, 5))        # input-centric: the planted trigger
    assert set(f.F[:, k].abs().topk(4).indices.tolist()) == {0, 1, 2, 3}  # its largest neurons: the planted ones
    assert f.top_tokens(m, k, 3)[0][0] == "Q"                            # output-centric: the planted readout
    alpha = 2.5
    ivs = f.steer(k, alpha)
    site, add = ivs[0]
    assert site == "blocks.0.mlp_act"
    act = torch.randn(2, 5, m.adapter.d_mlp)
    from actlab.core import Ctx

    delta = add(act, Ctx(site, None, None)) - act                       # spec: exactly alpha x a unit vector
    assert torch.allclose(delta, alpha * f.unit(k).expand_as(act), atol=1e-6)
    assert float(delta[0, 0].norm()) == pytest.approx(alpha, rel=1e-5)
    # the same edit written at the MLP output (W_out F_k / ||F_k||) gives the same logits
    probe = ["ponm", "ghfe"]
    with m.intervene(ivs), torch.no_grad():
        a = m(probe).logits
    with m.intervene(f.steer(k, alpha, "mlp_out", m)), torch.no_grad():
        b = m(probe).logits
    assert torch.allclose(a, b, atol=1e-4)
    q = m.tokenizer("Q", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        base = torch.softmax(m(probe).logits[:, -1], -1)[:, q]
    low = base < 0.1                                                     # prompts that do not predict 'Q' yet
    assert bool(low.any()) and bool((torch.softmax(a[:, -1], -1)[:, q][low] > 5 * base[low]).all())  # it promotes Q
    g = SNMFFeatures.load(f.save(tmp_path / "s"))
    assert torch.equal(g.F, f.F) and g.contexts == f.contexts and g.layer == 0
    with pytest.raises(IndexError, match="out of range"):
        f.unit(6)
    with pytest.raises(ValueError, match="needs the model"):
        f.steer(k, 1.0, "mlp_out")


def test_cli_fit_describe_steer(tmp_path, capsys):
    from actlab import clikit
    from actlab.dictionary.cli import register

    ap = clikit.ArgumentParser(prog="actlab")
    register(clikit.subcommands(ap, dest="command"))

    def main(argv):
        a = ap.parse_args(argv)
        a.func(a)

    f = tmp_path / "t.txt"
    f.write_text("abZcd\nZefg\nhijk")
    main(["snmf", "fit", "tiny-llama", "--file", str(f), "--layer", "1", "--features", "3", "--iters", "20",
          "--restarts", "1", "--out", str(tmp_path / "s")])
    assert "3 features from" in capsys.readouterr().out
    got = SNMFFeatures.load(tmp_path / "s")
    lib = fit(load_model("tiny-llama"), ["abZcd", "Zefg", "hijk"], 1, 3, iters=20, restarts=1)
    assert torch.allclose(got.F, lib.F, atol=1e-5) and got.contexts == lib.contexts  # the CLI = the library
    main(["snmf", "describe", str(tmp_path / "s"), "--model", "tiny-llama", "--feature", "0", "--n", "2"])
    out = capsys.readouterr().out
    assert out.startswith("feature 0:") and "promotes:" in out and repr(lib.top_contexts(0, 1)[0][1]) in out
    main(["snmf", "steer", str(tmp_path / "s"), "--model", "tiny-llama", "--feature", "0", "--prompt", "ab",
          "--max-new-tokens", "2"])
    assert "### ab" in capsys.readouterr().out
    with pytest.raises(ValueError, match="sparsity"):
        main(["snmf", "fit", "tiny-llama", "--text", "ab", "--sparsity", "2", "--out", str(tmp_path / "x")])
