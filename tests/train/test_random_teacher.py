"""Random-teacher distillation (§3): the linear probe reaches 100% on linearly separable features and chance on
shuffled labels; interpolation at alpha 0 and 1 reproduces the endpoint losses exactly; the distillation loss is the
teacher-target cross-entropy (minimal at the teacher, teacher frozen); and the calibrated effect: over 3 seeds the
student's backbone probe beats the random teacher's and its own init. On the clustered toy the random-input control
did not reproduce (the student distilled on isotropic noise gains about as much; docs/train.md), so it is reported,
not asserted there; on real images (digits) it does, and is asserted."""
import pytest
import torch

from actlab.train.configs import TeacherConfig
from actlab.train.probe import interpolation_losses, linear_probe_accuracy
from actlab.train.random_teacher import (
    Net,
    clustered_data,
    degenerate_fraction,
    digits_data,
    distill,
    distillation_loss,
    init_student,
    make_net,
    noise_controls,
    probe,
    random_inputs,
    run_random_teacher,
)


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
    cfg = TeacherConfig(steps=5, n_train=64, width=32, d_out=8, head="mlp")
    torch.manual_seed(0)
    teacher = make_net(cfg)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, _ = clustered_data(64, cfg, 1)
    student, losses, ents = distill(teacher, x, cfg)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert len(losses) == 5 and len(ents) == 5 and not torch.equal(student.head[-1].weight, teacher.head[-1].weight)


def test_dino_head_is_cosine_against_unit_prototypes():
    torch.manual_seed(0)
    net = Net(16, 8, 20, head="dino", hidden=12, bottleneck=4)
    x = torch.randn(7, 16)
    out = net(x)
    assert out.shape == (7, 20) and out.abs().max() <= 1 + 1e-6          # cosines
    with torch.no_grad():
        net.last.weight.mul_(5.0)                                          # prototypes are weight-normalised
        net.proj[-1].weight.mul_(3.0)
        net.proj[-1].bias.mul_(3.0)                                        # the bottleneck is l2-normalised
    torch.testing.assert_close(net(x), out)
    with pytest.raises(ValueError, match="head='conv'"):
        TeacherConfig(head="conv")


def test_student_probe_beats_the_random_teacher_across_seeds(one_thread):
    """The calibrated setting (TeacherConfig defaults: DINO head, tau 0.04/0.1, independent student init, 600
    steps); seeds 4-8 held out from the calibration gave gains +0.012..+0.072 (mean +0.035)."""
    gains, trained = [], []
    for seed in (0, 1, 2):
        cfg = TeacherConfig(seed=seed)
        xtr, ytr = clustered_data(cfg.n_train, cfg, seed + 11)
        xte, yte = clustered_data(cfg.n_test, cfg, seed + 12)
        torch.manual_seed(seed)
        teacher = make_net(cfg)
        init = init_student(teacher, cfg)
        acc_t, acc_0 = probe(teacher, xtr, ytr, xte, yte), probe(init, xtr, ytr, xte, yte)
        student, _, ents = distill(teacher, xtr, cfg, student=init)
        acc_s = probe(student, xtr, ytr, xte, yte)
        gains.append(acc_s - acc_t)
        trained.append(acc_s - acc_0)
        assert ents[-1] > 0.3                                              # no collapse to one prototype
    assert min(gains) > 0 and sum(gains) / 3 >= 0.02, gains               # seeds 0-2: +0.050, +0.038, +0.023
    assert min(trained) >= 0 and sum(trained) / 3 >= 0.03, trained       # the training's, not the init's luck


def test_ambient_embedding_puts_the_data_on_a_subspace_and_the_control_off_it():
    """``d_ambient`` > ``d_in``: the mixture lies on a d_in-dim subspace of the ambient space (as images on their
    manifold), the isotropic control fills the ambient space; ``d_ambient = d_in`` is the plain setting exactly."""
    cfg = TeacherConfig(d_ambient=32)
    x, y = clustered_data(500, cfg, 1)
    assert x.shape == (500, 32) and make_net(cfg).backbone[0].in_features == 32
    assert torch.linalg.matrix_rank(x - x.mean(0), rtol=1e-4) == 16                   # float32 data
    r = random_inputs(x, 2)
    assert torch.linalg.matrix_rank(r - r.mean(0), rtol=1e-4) == 32
    torch.testing.assert_close(r.std(), x.std(), rtol=0.05, atol=0)
    plain, same = clustered_data(50, TeacherConfig(), 3), clustered_data(50, TeacherConfig(d_ambient=16), 3)
    assert torch.equal(plain[0], same[0]) and torch.equal(plain[1], same[1])
    with pytest.raises(ValueError, match="d_ambient must be 0 or >= d_in=16"):
        TeacherConfig(d_ambient=8)


DIGITS = dict(data="digits", width=32, activation="gelu", hidden=256, bottleneck=64, steps=500)


def test_digits_student_beats_teacher_and_noise_student_does_not(one_thread):
    """Real images (docs/train.md, random teachers on digits): distilled on the digits, the student's backbone probes
    better than the frozen random teacher's on both calibration seeds; distilled on isotropic noise of the digits'
    mean and std, it gains less than half as much (it loses accuracy here). Held-out seeds 3-7: docs/train.md."""
    reps = [run_random_teacher(TeacherConfig(seed=s, **DIGITS), controls=False) for s in (0, 1)]
    gains = [r["gain"] for r in reps]
    noise = [r["gain_random_inputs"] for r in reps]
    assert all(g > 0 for g in gains), gains
    assert sum(gains) / 2 >= 0.015, gains
    assert sum(noise) / 2 < 0.5 * sum(gains) / 2, (gains, noise)
    assert all(len(r["teacher_degenerate_units"]) == 2 for r in reps)


def test_digits_inputs_and_controls():
    xtr, ytr, xte, yte = digits_data()
    assert xtr.shape[1] == 64 and len(xtr) == len(ytr) and len(xte) == len(yte) and set(ytr.tolist()) == set(range(10))
    assert abs(float(xtr.mean())) < 1e-5 and abs(float(xtr.std()) - 1) < 1e-4
    c = noise_controls(xtr, 0)
    iso, pix = c["isotropic"], c["per_pixel"]
    assert iso.shape == pix.shape == xtr.shape
    assert float((iso.std(0) - 1).abs().max()) < 0.15                    # every pixel the same scale
    torch.testing.assert_close(pix.std(0), xtr.std(0), atol=0.1, rtol=0.1)  # each pixel its own scale
    torch.manual_seed(0)
    net = Net(64, 32, 8, activation="gelu")
    assert isinstance(net.backbone[1], torch.nn.GELU)
    x = torch.randn(200, 64)
    with torch.no_grad():
        net.backbone[0].bias.fill_(-100.0)                                  # every first-layer unit dead
    assert degenerate_fraction(net, x)[0] == 1.0
    with pytest.raises(ValueError, match="data='cifar'"):
        TeacherConfig(data="cifar")
    with pytest.raises(ValueError, match="activation='tanh'"):
        TeacherConfig(activation="tanh")
