"""Recipe: self-distillation from a random teacher ("Random Teachers are Good Teachers", training-dynamics.md §3).

Teacher and student share an MLP backbone + projection head; the teacher stays frozen at its random initialisation;
the student minimises ``CE(softmax(t / tau_t), softmax(s / tau_s))`` on unlabelled inputs (no labels, one view,
no centering: the reference's random-teacher config). The backbone's linear-probe accuracy on the cluster labels is
compared between teacher and student, on clustered data and, as the control, when the student is trained on
isotropic random inputs instead.
"""
from __future__ import annotations

import copy
from dataclasses import asdict

import torch
from torch import nn

from actlab.train.configs import TeacherConfig


class Net(nn.Module):
    """``backbone`` (the representation that is probed) followed by a projection ``head``."""

    def __init__(self, d_in: int, width: int, d_out: int):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def clustered_data(n: int, cfg: TeacherConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [n, d_in], labels [n])``: a Gaussian mixture of ``n_clusters`` in R^d_in passed through a fixed random
    MLP (fixed by ``cfg.seed``; ``seed`` draws the samples)."""
    g = torch.Generator().manual_seed(cfg.seed)
    centres = torch.randn(cfg.n_clusters, cfg.d_in, generator=g) * cfg.separation
    w1 = torch.randn(cfg.d_in, cfg.d_in, generator=g) / cfg.d_in ** 0.5
    w2 = torch.randn(cfg.d_in, cfg.d_in, generator=g) / cfg.d_in ** 0.5
    gs = torch.Generator().manual_seed(seed)
    y = torch.randint(cfg.n_clusters, (n,), generator=gs)
    z = centres[y] + torch.randn(n, cfg.d_in, generator=gs)
    return torch.tanh(z @ w1) @ w2, y


def distillation_loss(t_logits: torch.Tensor, s_logits: torch.Tensor, tau_t: float = 1.0,
                      tau_s: float = 1.0) -> torch.Tensor:
    """Cross-entropy between the teacher's ``softmax(t / tau_t)`` (a constant) and the student's ``softmax(s / tau_s)``."""
    p = torch.softmax(t_logits.detach() / tau_t, -1)
    return -(p * torch.log_softmax(s_logits / tau_s, -1)).sum(-1).mean()


def distill(teacher: Net, inputs: torch.Tensor, cfg: TeacherConfig) -> tuple[Net, list[float], list[float]]:
    """Train a student from the frozen ``teacher`` on ``inputs`` (minibatches, Adam); returns (student, losses,
    student output entropies). The student starts at the teacher plus ``init_noise`` times a fresh init."""
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(cfg.seed + 7)
        fresh = Net(cfg.d_in, cfg.width, cfg.d_out)
    student = copy.deepcopy(teacher).requires_grad_(True)
    with torch.no_grad():
        for p, q in zip(student.parameters(), fresh.parameters()):
            p.mul_(1 - cfg.init_noise).add_(cfg.init_noise * q) if cfg.init_noise < 1 else p.copy_(q)
    teacher.requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    gb = torch.Generator().manual_seed(cfg.seed + 3)
    losses, ents = [], []
    for _ in range(cfg.steps):
        xb = inputs[torch.randint(len(inputs), (cfg.batch,), generator=gb)]
        s = student(xb)
        loss = distillation_loss(teacher(xb), s, cfg.tau_t, cfg.tau_s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        with torch.no_grad():  # collapse monitor: the student's output entropy
            ents.append(float(-(s.softmax(-1) * s.log_softmax(-1)).sum(-1).mean()))
    return student, losses, ents


def probe(net: Net, xtr, ytr, xte, yte) -> float:
    from actlab.train.probe import linear_probe_accuracy

    with torch.no_grad():
        return linear_probe_accuracy(net.backbone(xtr), ytr, net.backbone(xte), yte)


def run_random_teacher(cfg: TeacherConfig) -> dict:
    """Teacher vs student probe accuracy on clustered data, and the same with the student distilled on isotropic
    random inputs (matched mean and scale); the gain is ``student - teacher``."""
    xtr, ytr = clustered_data(cfg.n_train, cfg, cfg.seed + 11)
    xte, yte = clustered_data(cfg.n_test, cfg, cfg.seed + 12)
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(cfg.seed)
        teacher = Net(cfg.d_in, cfg.width, cfg.d_out)
    acc_t = probe(teacher, xtr, ytr, xte, yte)
    student, losses, ents = distill(teacher, xtr, cfg)
    acc_s = probe(student, xtr, ytr, xte, yte)
    gr = torch.Generator().manual_seed(cfg.seed + 13)
    noise = xtr.mean(0) + xtr.std() * torch.randn(xtr.shape, generator=gr)
    student_r, losses_r, _ = distill(teacher, noise, cfg)
    acc_r = probe(student_r, xtr, ytr, xte, yte)
    rep = {"config": asdict(cfg), "teacher_acc": acc_t, "student_acc": acc_s, "student_random_inputs_acc": acc_r,
           "gain": acc_s - acc_t, "gain_random_inputs": acc_r - acc_t, "losses": losses, "losses_random": losses_r,
           "student_entropy": ents, "chance": 1.0 / cfg.n_clusters}
    rep["checks"] = {"student_beats_teacher": acc_s > acc_t, "gain_shrinks_on_random_inputs": acc_r - acc_t < acc_s - acc_t}
    if cfg.out:
        from actlab.train.report import plot_curves, write_json

        write_json(cfg.out, "random_teacher.json", rep)
        n = len(losses)
        plot_curves(cfg.out, "random_teacher_loss.png", {"clustered inputs": (range(n), losses),
                                                         "random inputs": (range(n), losses_r)},
                    ylabel="distillation loss", title=f"probe acc: teacher {acc_t:.2f}, student {acc_s:.2f}, "
                                                      f"student (random inputs) {acc_r:.2f}")
    return rep
