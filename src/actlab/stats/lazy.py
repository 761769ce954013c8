"""The Lazy-Neuron toy (spec statistics.md section 2): activation sparsity emerging while a 2-layer ReLU MLP
(64 -> 512 -> 10) fits random labels of Gaussian inputs. With Adam at lr 1e-2 the fraction of non-zero hidden
units falls from ~50% at initialisation; with Adam at lr 1e-3 or plain SGD it stays near 50% (a weak, optimiser
dependent effect; the strong sparsity of the paper needs transformers trained much longer)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from actlab.stats.sparsity import active_fraction


@dataclass
class LazyRun:
    """Non-zero fraction of the hidden ReLU units (per token, averaged over all inputs) at each recorded step."""

    optimizer: str
    lr: float
    steps: list[int] = field(default_factory=list)
    active_frac: list[float] = field(default_factory=list)

    @property
    def drop(self) -> float:
        """Fall of the non-zero fraction from the first to the last recorded step (fraction, not points)."""
        return self.active_frac[0] - self.active_frac[-1]


def lazy_neuron_toy(optimizer: str = "adam", lr: float = 1e-2, steps: int = 8000, record_every: int = 500,
                    n_inputs: int = 4000, d_in: int = 64, d_hidden: int = 512, n_classes: int = 10,
                    batch_size: int = 128, seed: int = 0) -> LazyRun:
    """Train the toy on random labels and record the hidden layer's non-zero fraction over all inputs at step 0,
    every ``record_every`` steps and at the end."""
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {optimizer!r}")
    if steps < 1 or record_every < 1:
        raise ValueError(f"steps and record_every must be >= 1; got {steps}, {record_every}")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.randn(n_inputs, d_in, generator=g)
    y = torch.randint(n_classes, (n_inputs,), generator=g)
    l1, l2 = torch.nn.Linear(d_in, d_hidden), torch.nn.Linear(d_hidden, n_classes)
    params = [*l1.parameters(), *l2.parameters()]
    opt = torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr)
    run = LazyRun(optimizer, lr)

    def record(step: int) -> None:
        with torch.no_grad():
            run.steps.append(step)
            run.active_frac.append(float(active_fraction(torch.relu(l1(x))).mean()))

    record(0)
    for step in range(1, steps + 1):
        idx = torch.randint(n_inputs, (batch_size,), generator=g)
        loss = torch.nn.functional.cross_entropy(l2(torch.relu(l1(x[idx]))), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % record_every == 0 or step == steps:
            record(step)
    return run
