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
