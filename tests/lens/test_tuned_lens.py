"""Tuned lens: training lowers KL(final || lens) vs the logit lens at each trained layer (texts and a store), save/load
through actlab.artifact (kind actlab.tuned_lens), the output folder is locked while training."""
import pytest
import torch

from actlab import load_model
from actlab.artifact import ArtifactError, folder_lock, save_artifact
from actlab.lens import TunedLens, TunedLensConfig, logit_lens, train_tuned_lens

from .conftest import TEXTS


@pytest.fixture(scope="module")
def docs():
    from actlab.data import load_texts

    return load_texts("demo")[:40]


def test_training_lowers_kl_on_held_out_tokens(biased, docs, one_thread):
    m = biased("tiny-llama")
    cfg = TunedLensConfig(layers=[0, 1], steps=60, lr=1e-2, batch_tokens=256, context_length=32, max_contexts=48)
    lens = train_tuned_lens(m, docs, cfg)
    before, after = lens.metrics["eval_kl_logit_lens"], lens.metrics["eval_kl_tuned_lens"]
    assert set(before) == {"blocks.0.resid_post", "blocks.1.resid_post"}
    assert after["blocks.0.resid_post"] < 0.8 * before["blocks.0.resid_post"]
    # the last block's logit lens is already exact (KL 0): the identity start stays near it
    assert before["blocks.1.resid_post"] < 1e-6 and after["blocks.1.resid_post"] < 1e-2
    # the trained lens also wins on new text read through logit_lens(lens=...)
    a = logit_lens(m, TEXTS, "blocks.0.resid_post").mean_kl()
    b = logit_lens(m, TEXTS, "blocks.0.resid_post", lens=lens).mean_kl()
    assert b < a
    assert all(p.grad is None or p.requires_grad for p in m.module.parameters())   # model left trainable as before
    assert all(p.grad is None for p in m.module.parameters())                      # and untouched by the training


def test_train_from_store(biased, tmp_path, one_thread):
    from actlab.store import HarvestConfig, harvest

    m = biased("tiny-gpt2")
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(["the quick brown fox jumps over the lazy dog"] * 30 + TEXTS * 10))
    st = harvest(m, HarvestConfig(data=str(corpus), sites=["blocks.0.resid_post", "blocks.1.resid_post"],
                                  out=str(tmp_path / "store"), tokens=2048, context_length=32, dtype="fp32",
                                  progress=False))
    cfg = TunedLensConfig(layers=[0], steps=60, lr=1e-2, batch_tokens=256, context_length=32, max_contexts=64)
    lens = train_tuned_lens(m, st, cfg, out=tmp_path / "lens")
    assert lens.metrics["eval_kl_tuned_lens"]["blocks.0.resid_post"] < \
        0.8 * lens.metrics["eval_kl_logit_lens"]["blocks.0.resid_post"]
    back = TunedLens.load(tmp_path / "lens")
    assert back.sites == ["blocks.0.resid_post"] and back.metrics == lens.metrics
    torch.testing.assert_close(logit_lens(m, TEXTS, "blocks.0.resid_post", lens=back).logits,
                               logit_lens(m, TEXTS, "blocks.0.resid_post", lens=lens).logits)
    with pytest.raises(KeyError, match="blocks.1.resid_pre"):
        train_tuned_lens(m, st, TunedLensConfig(layers=[1], site_kind="resid_pre", steps=1))


def test_save_load_and_refusals(biased, tmp_path):
    m = biased("tiny-neox")
    lens = TunedLens.for_model(m, ["blocks.0.resid_post"])
    with torch.no_grad():
        lens.bias["blocks_0_resid_post"].normal_()
    lens.save(tmp_path / "a")
    back = TunedLens.load(tmp_path / "a")
    torch.testing.assert_close(back.bias["blocks_0_resid_post"], lens.bias["blocks_0_resid_post"])
    save_artifact(tmp_path / "b", "actlab.direction", {"x": 1}, {"w": torch.zeros(2)})
    with pytest.raises(ArtifactError, match="actlab.tuned_lens"):
        TunedLens.load(tmp_path / "b")
    with pytest.raises(FileNotFoundError):
        TunedLens.load(tmp_path / "missing")
    with torch.no_grad():
        lens.weight["blocks_0_resid_post"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        lens.save(tmp_path / "c")
    with pytest.raises(ValueError, match="d_model=64"):
        TunedLens(["blocks.0.resid_post"], 32).check_model(m)


def test_output_folder_is_locked(biased, tmp_path, docs):
    m = biased("tiny-gpt2")
    with folder_lock(tmp_path / "busy"), pytest.raises(ArtifactError, match="in use"):
        train_tuned_lens(m, docs[:5], TunedLensConfig(layers=[0], steps=1, context_length=16, max_contexts=4),
                         out=tmp_path / "busy")


def test_config_and_input_errors(biased):
    with pytest.raises(ValueError, match="optimizer"):
        TunedLensConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="site_kind"):
        TunedLensConfig(site_kind="mlp_out")
    with pytest.raises(TypeError, match="texts"):
        train_tuned_lens(biased("tiny-gpt2"), 42, TunedLensConfig(steps=1))


@pytest.mark.real
def test_smollm2_tuned_lens_lowers_kl(smollm2, one_thread):
    """A few hundred demo-corpus contexts, three layers, a few Adam steps: held-out KL falls at every trained layer."""
    from actlab.data import load_texts

    cfg = TunedLensConfig(layers=[3, 12, 24], steps=8, lr=3e-3, batch_tokens=64, context_length=8,
                          max_contexts=200, eval_fraction=0.1)
    lens = train_tuned_lens(smollm2, load_texts("demo")[:300], cfg)
    before, after = lens.metrics["eval_kl_logit_lens"], lens.metrics["eval_kl_tuned_lens"]
    for s in lens.sites:
        assert after[s] < before[s], (s, before[s], after[s])


def test_first_loss_is_the_logit_lens_kl_final_to_lens(docs):
    """Full batch, identity start: the first loss is sum over sites of mean KL(final || logit lens) over the training
    tokens (the paper's direction: the final distribution is the reference). The final norm's gain is scaled up so
    the distributions are peaked and the two KL directions differ by far more than the tolerance."""
    from actlab.data import pack_contexts
    from actlab.lens import kl_final_lens

    from ..conftest import randomize

    m = randomize(load_model("tiny-gpt2"))
    with torch.no_grad():
        m.adapter.final_norm.weight.mul_(15.0)
    cfg = TunedLensConfig(layers=[0], steps=1, batch_tokens=10**6, context_length=16, max_contexts=6,
                          eval_fraction=0.0)
    lens = train_tuned_lens(m, docs, cfg)
    ids = pack_contexts(m.tokenizer, docs, 16, seed=0, max_contexts=6).input_ids
    r = logit_lens(m, ids, "blocks.0.resid_post")
    want = float(r.kl.mean())
    rev = float(kl_final_lens(r.logits[0], r.final_logits).mean())
    assert abs(want - rev) > 0.05 * want                       # the reversed direction is distinguishable
    assert abs(lens.metrics["loss_first"][0] - want) < 1e-3 * want
    p, q = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    lp, lq = p.log_softmax(-1), q.log_softmax(-1)
    torch.testing.assert_close(kl_final_lens(p, q), (lp.exp() * (lp - lq)).sum(-1))


def test_training_leaves_a_trainable_model_untouched(docs):
    """On a model whose weights require grad (a user's training run), the read-out weights get no gradient and keep
    their requires_grad flag."""
    m = load_model("tiny-llama")
    for p in m.module.parameters():
        p.requires_grad_(True)
    before = {n: p.detach().clone() for n, p in m.module.named_parameters()}
    train_tuned_lens(m, docs[:5], TunedLensConfig(layers=[0], steps=3, lr=1e-2, context_length=16, max_contexts=4))
    for n, p in m.module.named_parameters():
        assert p.requires_grad and p.grad is None, n
        assert torch.equal(p, before[n]), n
