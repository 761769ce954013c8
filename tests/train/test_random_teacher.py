"""Random-teacher distillation tooling (§3): the linear probe reaches 100% on linearly separable features and chance
on shuffled labels; interpolation at alpha 0 and 1 reproduces the endpoint losses exactly; the distillation loss is
the teacher-target cross-entropy (minimal at the teacher, teacher frozen). The expected probe-accuracy gain was
calibrated and did NOT hold across seeds on this toy (docs/train.md), so it is reported, not asserted."""
import pytest
import torch

from actlab.train.configs import TeacherConfig
from actlab.train.probe import interpolation_losses, linear_probe_accuracy
from actlab.train.random_teacher import Net, clustered_data, distill, distillation_loss


def test_probe_separable_is_perfect_and_shuffled_is_chance():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(4, (400,), generator=g)
    x = torch.randn(400, 8, generator=g) * 0.1
    x[torch.arange(400), y] += 3.0                    # class c lives on axis c: linearly separable
    assert linear_probe_accuracy(x[:300], y[:300], x[300:], y[300:]) == 1.0
    ys = y[torch.randperm(400, generator=g)]
    assert linear_probe_accuracy(x[:300], ys[:300], x[300:], ys[300:]) < 0.45  # chance 0.25
    with pytest.raises(ValueError, match="differ in length"):
        linear_probe_accuracy(x[:300], y[:299], x[300:], y[300:])


def test_interpolation_endpoints_reproduce_the_losses_exactly():
    cfg = TeacherConfig()
    torch.manual_seed(0)
    a, b = Net(16, 32, 8), Net(16, 32, 8)
    x, _ = clustered_data(64, cfg, 1)

    def loss(m):
        return m(x).pow(2).mean()

    la, lb = loss(a).item(), loss(b).item()
    keep = {k: v.clone() for k, v in a.state_dict().items()}
    got = interpolation_losses(a, a.state_dict(), b.state_dict(), [0.0, 0.5, 1.0], loss)
    assert got[0] == la and got[2] == lb and got[1] not in (la, lb)
    assert all(torch.equal(keep[k], v) for k, v in a.state_dict().items())  # the module is restored


def test_distillation_loss_and_frozen_teacher():
    t = torch.randn(5, 8)
    ce = distillation_loss(t, t)
    entropy = -(t.softmax(-1) * t.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(ce, entropy)                       # CE(p, p) = H(p): the minimum
    assert distillation_loss(t, torch.randn(5, 8)) > ce
    cfg = TeacherConfig(steps=5, n_train=64, width=32, d_out=8)
    torch.manual_seed(0)
    teacher = Net(cfg.d_in, cfg.width, cfg.d_out)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, _ = clustered_data(64, cfg, 1)
    student, losses, ents = distill(teacher, x, cfg)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert len(losses) == 5 and len(ents) == 5 and not torch.equal(student.head[-1].weight, teacher.head[-1].weight)
