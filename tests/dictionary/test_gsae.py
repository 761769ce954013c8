"""g-SAE: beta = 0 is exactly TopK; with a downstream gradient, selection favours loss-relevant latents."""
import torch

from actlab.dictionary import DictConfig, build
from actlab.dictionary.trainer import TrainConfig, Trainer


def test_beta_zero_equals_topk():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 16, generator=g)
    grad = torch.randn(2048, 16, generator=g)
    tc = TrainConfig(total_tokens=2048 * 2, batch_size=256, lr=3e-3, warmup_steps=2, progress=False)
    a = Trainer(DictConfig(arch="topk", d_in=16, d_sae=64, k=4), tc, _with_grad(x, grad)).fit()
    b = Trainer(DictConfig(arch="gsae", d_in=16, d_sae=64, k=4, gsae_beta=0.0), tc,
                _with_grad(x, grad)).fit()
    assert torch.equal(a.W_enc, b.W_enc) and torch.equal(a.W_dec, b.W_dec)


def _with_grad(x, grad):
    def make(epoch):
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(epoch))
        for i in range(0, x.shape[0] - 255, 256):
            sel = order[i:i + 256]
            yield x[sel], x[sel], grad[sel]
    return make


def test_gradient_changes_selection_towards_aligned_latents():
    m = build(DictConfig(arch="gsae", d_in=4, d_sae=4, k=1, gsae_beta=10.0))
    with torch.no_grad():
        m.W_enc.copy_(torch.eye(4))
        m.W_dec.copy_(torch.eye(4))
        m.b_enc.zero_()
        m.b_dec.zero_()
    x = torch.tensor([[3.0, 1.0, 0.0, 0.0]])      # latent 0 is loud, latent 1 quiet
    g = torch.tensor([[0.0, 1.0, 0.0, 0.0]])      # but only latent 1's direction moves the loss
    plain = m.encode(x)
    aware = m.encode_with_grad(x, g)
    assert plain.argmax() == 0 and aware.argmax() == 1
    assert aware[0, 1] == 1.0                     # the kept latent keeps its plain value


def test_planted_quiet_but_important_features():
    """The spec's planted check: loud atoms (3x) orthogonal to a readout w, quiet atoms along it, L = (w.x_hat - y)^2.
    At equal k the g-SAE's reconstruction (gradient-aware selection, the paper's inference mode with labels) keeps
    the readout far better than TopK's. (The spec's other expectation, more quiet atoms recovered at cos > 0.9, is
    not reached by either trainer here: both leave the quiet atoms' max cosine at ~0.8.)"""
    from actlab.dictionary.synthetic import planted_quiet
    data = planted_quiet(8192, seed=0)
    x, grad, w = data["x"], data["grad"], data["w"]
    tc = TrainConfig(total_tokens=8192 * 5, batch_size=128, lr=3e-3, warmup_steps=10, progress=False,
                     dead_tokens=5000, checkpoint_minutes=0)

    def src(epoch):
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(epoch))
        for i in range(0, x.shape[0] - 127, 128):
            s = order[i:i + 128]
            yield x[s], x[s], grad[s]
    topk = Trainer(DictConfig(arch="topk", d_in=32, d_sae=96, k=3), tc, src).fit()
    gsae = Trainer(DictConfig(arch="gsae", d_in=32, d_sae=96, k=3, gsae_beta=10.0), tc, src).fit()
    xt, gt = x[:4000], grad[:4000]
    with torch.no_grad():
        down_topk = float(((topk(xt) - xt) @ w).pow(2).mean())
        down_gsae = float(((gsae.decode(gsae.encode_with_grad(xt, gt)) - xt) @ w).pow(2).mean())
    assert down_gsae < 0.7 * down_topk, (down_gsae, down_topk)   # measured 0.38 vs 0.65


def test_training_without_gradients_is_refused():
    """g-SAE training on plain batches would silently be TopK: refused (beta 0 is TopK by definition, allowed)."""
    import pytest
    x = torch.randn(512, 16, generator=torch.Generator().manual_seed(0))
    tc = TrainConfig(total_tokens=512, batch_size=256, progress=False)
    from actlab.dictionary import tensor_source
    with pytest.raises(ValueError, match="needs the downstream-loss gradient"):
        Trainer(DictConfig(arch="gsae", d_in=16, d_sae=32, k=2), tc, tensor_source(x, 256)).fit()
    Trainer(DictConfig(arch="gsae", d_in=16, d_sae=32, k=2, gsae_beta=0.0), tc, tensor_source(x, 256)).fit()
