"""iVAT (§5, the interpretable variant): the perturbation has norm eps per example and lies in the span of that
example's attention-score differences to its batch mates (VAT's does not); the term is 0 at eps = 0; and after
iVAT training the keyword gets more attention and attention entropy is lower than after plain training (calibrated
on seeds 0-2, 150 steps: keyword attention 0.615 -> 0.658, entropy 0.577 -> 0.515, every seed in the same
direction)."""
import pytest
import torch

from actlab import Model
from actlab.train.configs import VatConfig
from actlab.train.ivat import difference_directions, ivat_loss, ivat_perturbation
from actlab.train.vat import SCORES, AttnClassifier, keyword_data, run_vat, train_vat, vat_perturbation


def _residual(r: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Per example, the norm of r_i minus its projection onto span{D_ij}."""
    out = []
    for i in range(len(r)):
        q, _ = torch.linalg.qr(d[i].T.double())                      # [T, b] -> orthonormal basis of the span
        ri = r[i].double()
        out.append((ri - q @ (q.T @ ri)).norm())
    return torch.stack(out)


def test_ivat_norm_is_eps_in_the_span_of_attention_differences():
    torch.manual_seed(0)
    cfg = VatConfig()
    m = Model(AttnClassifier(cfg.vocab, cfg.d, cfg.n_classes), None, name="t")
    x, _, _ = keyword_data(4, cfg, 0)                                 # 3 differences in R^12: a proper subspace
    logits = m(x)
    d = difference_directions(m.record(x, sites=[SCORES])[SCORES])
    assert torch.all(d[torch.arange(4), torch.arange(4)] == 0)
    for eps in (0.5, 2.0):
        r = ivat_perturbation(m, x, logits, eps, cfg.xi, torch.Generator().manual_seed(1))
        torch.testing.assert_close(r.norm(dim=1), torch.full((4,), eps), rtol=1e-5, atol=0)
        assert _residual(r, d).max() < 1e-5 * eps
    r_vat = vat_perturbation(m, x, logits, 2.0, cfg.xi, torch.Generator().manual_seed(1))
    assert _residual(r_vat, d).min() > 0.1                            # plain VAT leaves the span
    assert ivat_loss(m, x, logits, 0.0, cfg.xi) == 0.0 and ivat_loss(m, x, logits, 2.0, cfg.xi) > 0
    with pytest.raises(ValueError, match="batch of >= 2"):
        ivat_perturbation(m, x[:1], logits[:1], 1.0, cfg.xi)
    with pytest.raises(ValueError, match="variant='at'"):
        VatConfig(variant="at")
    short = [train_vat(VatConfig(steps=3, variant=v), 1.0, 0) for v in ("vat", "ivat")]
    assert short[0] != short[1]                                       # the recipe trains with the variant asked for


def test_ivat_raises_keyword_attention_and_lowers_entropy(one_thread):
    rep = run_vat(VatConfig(seeds=3, variant="ivat"))
    assert rep["checks"] == {"keyword_attention_up": True, "entropy_down": True}
    assert rep["mean"]["vat"]["keyword_attention"] > rep["mean"]["plain"]["keyword_attention"] + 0.02
    assert rep["mean"]["vat"]["acc"] > 0.9
