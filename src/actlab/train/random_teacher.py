"""Recipe: self-distillation from a random teacher ("Random Teachers are Good Teachers", training-dynamics.md §3).

Teacher and student share the architecture: an MLP backbone (the probed embedding) and a projection head, DINO's
by default (MLP -> l2-normalised bottleneck -> weight-normalised prototypes) or a plain MLP. The teacher stays frozen
at its random initialisation; the student minimises ``CE(softmax((t - c) / tau_t), softmax(s / tau_s))`` on
unlabelled inputs (no labels, one view; ``c`` an optional EMA centre). The backbone's linear-probe accuracy on the
cluster labels is compared between teacher and student, on clustered data and, as the control, when the student is
trained on isotropic random inputs instead. ``data="digits"`` runs the same on real images (scikit-learn's 8x8 digits,
the probe on the digit labels), with a second control: Gaussian noise matched per pixel.
"""
from __future__ import annotations

import copy
from dataclasses import asdict

import torch
from torch import nn
from torch.nn import functional as F

from actlab.train.configs import TeacherConfig


class Net(nn.Module):
    """``backbone`` (the representation that is probed) followed by a projection head: ``head="mlp"``
    (``width -> hidden -> d_out``) or ``"dino"`` (``proj``: ``width -> hidden -> bottleneck``, l2-normalised, then
    cosine logits against ``d_out`` weight-normalised prototypes ``last``)."""

    def __init__(self, d_in: int, width: int, d_out: int, *, head: str = "mlp", hidden: int | None = None,
                 bottleneck: int = 32, activation: str = "relu"):
        super().__init__()
        hidden = hidden or width
        self.kind = head
        act = {"relu": nn.ReLU, "gelu": nn.GELU}[activation]
        self.backbone = nn.Sequential(nn.Linear(d_in, width), act(), nn.Linear(width, width), act())
        if head == "dino":
            self.proj = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
            self.last = nn.Linear(bottleneck, d_out, bias=False)
        elif head == "mlp":
            self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
        else:
            raise ValueError(f"head={head!r}; expected 'dino' or 'mlp'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.backbone(x)
        if self.kind == "dino":
            return F.normalize(self.proj(h), dim=-1) @ F.normalize(self.last.weight, dim=-1).T
        return self.head(h)


def make_net(cfg: TeacherConfig) -> Net:
    """The teacher/student architecture of ``cfg`` (initialised from the current torch RNG)."""
    d_in = 64 if cfg.data == "digits" else cfg.d_ambient or cfg.d_in
    return Net(d_in, cfg.width, cfg.d_out, head=cfg.head, hidden=cfg.hidden, bottleneck=cfg.bottleneck,
               activation=cfg.activation)


def clustered_data(n: int, cfg: TeacherConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [n, d_ambient or d_in], labels [n])``: a Gaussian mixture of ``n_clusters`` in R^d_in passed through a
    fixed random MLP ``tanh(z W1) W2`` into R^d_ambient (fixed by ``cfg.seed``; ``seed`` draws the samples)."""
    g = torch.Generator().manual_seed(cfg.seed)
    centres = torch.randn(cfg.n_clusters, cfg.d_in, generator=g) * cfg.separation
    w1 = torch.randn(cfg.d_in, cfg.d_in, generator=g) / cfg.d_in ** 0.5
    w2 = torch.randn(cfg.d_in, cfg.d_ambient or cfg.d_in, generator=g) / cfg.d_in ** 0.5
    gs = torch.Generator().manual_seed(seed)
    y = torch.randint(cfg.n_clusters, (n,), generator=gs)
    z = centres[y] + torch.randn(n, cfg.d_in, generator=gs)
    return torch.tanh(z @ w1) @ w2, y


def digits_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train [n, 64], y_train, x_test, y_test)``: the digits' fixed train/test split (``actlab.data``), pixels
    flattened and standardised by the training split's overall mean and std (so the layers see unit-scale inputs)."""
    from actlab.data.digits import load_digits

    tr, te = load_digits("train"), load_digits("test")
    xtr, xte = tr.x.flatten(1), te.x.flatten(1)
    mu, sd = xtr.mean(), xtr.std()
    return (xtr - mu) / sd, tr.y, (xte - mu) / sd, te.y


def noise_controls(x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The digits' random-input controls, ``x``'s shape: ``isotropic`` (one mean and std for all pixels, the paper's
    random inputs) and ``per_pixel`` (each pixel's own mean and std, independent across pixels)."""
    g = torch.Generator().manual_seed(seed)
    iso = x.mean() + x.std() * torch.randn(x.shape, generator=g)
    return {"isotropic": iso, "per_pixel": x.mean(0) + x.std(0) * torch.randn(x.shape, generator=g)}


@torch.no_grad()
def degenerate_fraction(net: Net, x: torch.Tensor, lo: float = 0.05) -> list[float]:
    """Per backbone layer, the fraction of units that are dead or always on over ``x`` (pre-activation > 0 on fewer
    than ``lo`` or more than ``1 - lo`` of the inputs): units whose repair is a data-agnostic gain."""
    out, h = [], x
    for m in net.backbone:
        h = m(h)
        if isinstance(m, nn.Linear):
            on = (h > 0).float().mean(0)
            out.append(float(((on < lo) | (on > 1 - lo)).float().mean()))
    return out


def distillation_loss(t_logits: torch.Tensor, s_logits: torch.Tensor, tau_t: float = 1.0,
                      tau_s: float = 1.0) -> torch.Tensor:
    """Cross-entropy between the teacher's ``softmax(t / tau_t)`` (a constant) and the student's ``softmax(s / tau_s)``."""
    p = torch.softmax(t_logits.detach() / tau_t, -1)
    return -(p * torch.log_softmax(s_logits / tau_s, -1)).sum(-1).mean()


def init_student(teacher: Net, cfg: TeacherConfig) -> Net:
    """``(1 - init_noise) * teacher + init_noise * fresh`` (a fresh init of the same architecture, seeded)."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed + 7)
        fresh = copy.deepcopy(teacher)
        for m in fresh.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    student = copy.deepcopy(teacher).requires_grad_(True)
    with torch.no_grad():
        for p, q in zip(student.parameters(), fresh.parameters(), strict=True):
            p.mul_(1 - cfg.init_noise).add_(cfg.init_noise * q)
    return student


def distill(teacher: Net, inputs: torch.Tensor, cfg: TeacherConfig,
            student: Net | None = None) -> tuple[Net, list[float], list[float]]:
    """Train a student (``init_student`` unless given) from the frozen ``teacher`` on ``inputs`` (minibatches, Adam);
    returns (student, losses, student output entropies at tau_s: the collapse monitor)."""
    student = init_student(teacher, cfg) if student is None else student
    teacher.requires_grad_(False)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    gb = torch.Generator().manual_seed(cfg.seed + 3)
    losses, ents, centre = [], [], None
    for _ in range(cfg.steps):
        xb = inputs[torch.randint(len(inputs), (cfg.batch,), generator=gb)]
        with torch.no_grad():
            t = teacher(xb)
            if cfg.center:
                m = t.mean(0)
                centre = m if centre is None else cfg.center_momentum * centre + (1 - cfg.center_momentum) * m
                t = t - centre
        s = student(xb)
        loss = distillation_loss(t, s, cfg.tau_t, cfg.tau_s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        with torch.no_grad():
            q = (s / cfg.tau_s).log_softmax(-1)
            ents.append(float(-(q.exp() * q).sum(-1).mean()))
    return student, losses, ents


def probe(net: Net, xtr, ytr, xte, yte) -> float:
    """Linear-probe accuracy of ``net``'s backbone embedding (not the head) on the cluster labels."""
    from actlab.train.probe import linear_probe_accuracy

    with torch.no_grad():
        return linear_probe_accuracy(net.backbone(xtr), ytr, net.backbone(xte), yte)


def random_inputs(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Isotropic Gaussian inputs with ``x``'s mean and overall scale (the control)."""
    g = torch.Generator().manual_seed(seed)
    return x.mean(0) + x.std() * torch.randn(x.shape, generator=g)


def run_random_teacher(cfg: TeacherConfig, controls: bool = True) -> dict:
    """Teacher vs student probe accuracy on the data (and of the student's init, so the gain is the training's), and
    with the student distilled on random inputs (isotropic; on digits also per-pixel matched); gains are
    ``student - teacher``. ``controls=False`` skips the per-pixel control (digits)."""
    if cfg.data == "digits":
        xtr, ytr, xte, yte = digits_data()
        noise = noise_controls(xtr, cfg.seed + 13)
        if not controls:
            noise.pop("per_pixel")
    else:
        xtr, ytr = clustered_data(cfg.n_train, cfg, cfg.seed + 11)
        xte, yte = clustered_data(cfg.n_test, cfg, cfg.seed + 12)
        noise = {"isotropic": random_inputs(xtr, cfg.seed + 13)}
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        teacher = make_net(cfg)
    acc_t = probe(teacher, xtr, ytr, xte, yte)
    acc_0 = probe(init_student(teacher, cfg), xtr, ytr, xte, yte)
    student, losses, ents = distill(teacher, xtr, cfg)
    acc_s = probe(student, xtr, ytr, xte, yte)
    student_r, losses_r, _ = distill(teacher, noise["isotropic"], cfg)
    acc_r = probe(student_r, xtr, ytr, xte, yte)
    rep = {"config": asdict(cfg), "teacher_acc": acc_t, "student_init_acc": acc_0, "student_acc": acc_s,
           "student_random_inputs_acc": acc_r, "gain": acc_s - acc_t, "gain_random_inputs": acc_r - acc_t,
           "losses": losses, "losses_random": losses_r, "student_entropy": ents,
           "chance": 1.0 / (10 if cfg.data == "digits" else cfg.n_clusters),
           "teacher_degenerate_units": degenerate_fraction(teacher, xtr),
           "student_degenerate_units": degenerate_fraction(student, xtr)}
    if "per_pixel" in noise:
        acc_p = probe(distill(teacher, noise["per_pixel"], cfg)[0], xtr, ytr, xte, yte)
        rep.update(student_per_pixel_noise_acc=acc_p, gain_per_pixel_noise=acc_p - acc_t)
    rep["checks"] = {"student_beats_teacher": acc_s > acc_t, "gain_shrinks_on_random_inputs": acc_r < acc_s}
    if cfg.out:
        from actlab.train.report import plot_curves, write_json

        write_json(cfg.out, "random_teacher.json", rep)
        n = len(losses)
        plot_curves(cfg.out, "random_teacher_loss.png", {f"{cfg.data} inputs": (range(n), losses),
                                                         "random inputs": (range(n), losses_r)},
                    ylabel="distillation loss", title=f"probe acc: teacher {acc_t:.2f}, student {acc_s:.2f}, "
                                                      f"student (random inputs) {acc_r:.2f}")
    return rep
