"""Reference-model and subspace clamps (§1). Reference: the clamped activation equals the reference model's on each
step's own input; under grad="block" nothing upstream and nothing of the reference gets a gradient. Subspace: only
the projection onto the span changes (to zero or a target), the orthogonal complement is untouched. Misuse is
refused clearly."""
import pytest
import torch

from actlab.train import ReferenceClamp
from actlab.train.configs import InductionConfig
from actlab.train.induction import make_model
from actlab.train.toy import repeated_sequences

SITE = "module:blocks.0.pattern"


def test_reference_clamp_copies_the_reference_on_each_input_and_blocks_gradients():
    cfg = InductionConfig()
    student = make_model(cfg)
    ref = make_model(InductionConfig(seed=1))
    g = torch.Generator().manual_seed(0)
    xs = [repeated_sequences(4, cfg.context, cfg.vocab, cfg.min_len, cfg.max_len, g).ids for _ in range(2)]
    clamp = ReferenceClamp(reference=ref, sites=(SITE,))
    with student.intervene({SITE: clamp}, grad="block"):
        for x in xs:                                                     # a new input each step
            clamp.prepare(x)
            with student.recording([SITE]) as rec:
                loss = student(x).logsumexp(-1).sum()
            torch.testing.assert_close(rec[SITE], ref.record(x, sites=[SITE])[SITE], rtol=0, atol=0)
            student.module.zero_grad()
            loss.backward()
            blk = student.module.blocks[0]
            assert blk.qkv.weight.grad is None or blk.qkv.weight.grad[: 2 * cfg.d_model].abs().max() == 0  # q, k
            assert student.module.blocks[1].qkv.weight.grad.abs().max() > 0
            assert all(p.grad is None for p in ref.module.parameters())
    with pytest.raises(ValueError, match="needs reference="):
        ReferenceClamp(sites=(SITE,))
    fresh = ReferenceClamp(reference=ref, sites=(SITE,))
    with student.intervene({SITE: fresh}), pytest.raises(RuntimeError, match="prepare"):
        student(xs[0])
    fresh.prepare(xs[0][:2])
    with student.intervene({SITE: fresh}), pytest.raises(ValueError, match="shape"):
        student(xs[0])


def test_subspace_clamp_edits_only_its_subspace():
    from actlab.train import SubspaceClamp

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(16, 3, generator=g)                              # not orthonormal: the clamp orthonormalises
    value = torch.randn(16, generator=g)
    act = torch.randn(4, 5, 16, generator=g)
    q, _ = torch.linalg.qr(basis)
    for v in (None, value):
        out = SubspaceClamp(basis=basis, value=v).edit(act, None)
        want_in = torch.zeros(4, 5, 3) if v is None else (v @ q).expand(4, 5, 3)
        torch.testing.assert_close(out @ q, want_in, atol=1e-5, rtol=0)     # the subspace holds the target
        perp = torch.eye(16) - q @ q.T
        torch.testing.assert_close(out @ perp, act @ perp, atol=1e-5, rtol=0)  # the complement is untouched
    with pytest.raises(ValueError, match="linearly dependent"):
        SubspaceClamp(basis=torch.cat([basis, basis[:, :1]], 1))
    with pytest.raises(ValueError, match=r"\[d, k\]"):
        SubspaceClamp(basis=torch.randn(3, 16))
