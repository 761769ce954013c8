"""Recipe: hidden-activation replay for class-incremental learning (SHARP, training-dynamics.md §4).

A classifier split at a replay layer L into ``bottom`` and ``top``. Each episode brings new classes; the loss is the
cross-entropy of the new data through the whole network plus a replay loss computed by feeding *stored layer-L
activations* of the most recently learned classes into ``top`` only. The bottom layers keep training (they are not
frozen) but the replay path gives them exactly zero gradient. Stored activations go stale as the bottom changes; the
drift (cosine between stored and recomputed activations) is reported. With ``cfg.sparsity > 0`` the connectivity is
sparse and dynamic: every weight matrix keeps that fraction of its connections off (a random mask at the start),
and every ``rewire_every`` steps the smallest active connections are pruned and as many regrown at random
(``actlab.train.sparse.prune_and_regrow``). With ``cfg.allocate`` units are allocated to tasks instead
(``actlab.train.allocation``): each phase allocates the units most active on the new task, rewires plastic -> allocated
connections into plastic units, and units whose classes have left the replay window are frozen, so later tasks cannot
overwrite them (a fresh Adam per episode, as in the authors' code, so a zero gradient means no update).
"""
from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from actlab.train.allocation import UnitAllocation
from actlab.train.configs import SharpConfig
from actlab.train.sparse import apply_masks, mask_grads, prunable, prune_and_regrow, random_masks, sparsity_of


class SplitNet(nn.Module):
    """``bottom`` (inputs -> layer-L activations) and ``top`` (layer L -> logits)."""

    def __init__(self, d_in: int, width: int, n_classes: int):
        super().__init__()
        self.bottom = nn.Sequential(nn.Flatten(), nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.top = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.bottom(x))

    #: the hidden linear layers (weight, bias) in order: the units that ``UnitAllocation`` allocates to tasks
    HIDDEN = (("bottom.1.weight", "bottom.1.bias"), ("bottom.3.weight", "bottom.3.bias"), ("top.0.weight", "top.0.bias"))

    def hidden(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three hidden layers' ReLU activations (the last bottom one is the replay layer)."""
        h1 = self.bottom[:3](x)
        h2 = self.bottom[3:](h1)
        return [h1, h2, self.top[:2](h2)]


class ActivationBuffer:
    """Per-class reservoir of layer-L activations (detached), with their inputs kept for drift measurement; holds
    the ``keep_classes`` most recently added classes."""

    def __init__(self, per_class: int, keep_classes: int, seed: int = 0):
        self.per_class, self.keep = per_class, keep_classes
        self.store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.order: list[int] = []
        self.g = torch.Generator().manual_seed(seed)

    def add(self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> None:
        for c in labels.unique().tolist():
            idx = (labels == c).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=self.g)[: self.per_class]]
            self.store[c] = (acts[idx].detach().clone(), inputs[idx])
            if c in self.order:
                self.order.remove(c)
            self.order.append(c)
        while len(self.order) > self.keep:
            self.store.pop(self.order.pop(0))

    def __len__(self) -> int:
        return sum(len(a) for a, _ in self.store.values())

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All stored ``(activations, labels)``."""
        acts = torch.cat([a for a, _ in self.store.values()])
        labels = torch.cat([torch.full((len(a),), c, dtype=torch.long) for c, (a, _) in self.store.items()])
        return acts, labels

    @torch.no_grad()
    def drift(self, net: SplitNet) -> float:
        """Mean cosine between stored activations and the bottom's current activations of the same inputs."""
        cos = [torch.cosine_similarity(a, net.bottom(x), dim=-1) for a, x in self.store.values()]
        return float(torch.cat(cos).mean()) if cos else 1.0


def replay_loss(net: SplitNet, acts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The replay path: stored layer-L activations through ``top`` only (the bottom is skipped)."""
    return nn.functional.cross_entropy(net.top(acts), labels)


def episodes(labels: torch.Tensor, per_episode: int) -> list[list[int]]:
    """Classes in order, ``per_episode`` at a time."""
    classes = sorted(labels.unique().tolist())
    return [classes[i:i + per_episode] for i in range(0, len(classes), per_episode)]


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: list[int]) -> float:
    m = torch.isin(y, torch.tensor(classes))
    if not bool(m.any()):
        return float("nan")
    return float((net(x[m]).argmax(-1) == y[m]).double().mean())


def forgetting(class_acc: list[dict[int, float]]) -> float:
    """Mean over the classes learned before the last episode of (best accuracy after an earlier episode - final
    accuracy): how much of what was learned is lost (class-incremental forgetting)."""
    final = class_acc[-1]
    drops = [max(a[c] for a in class_acc[:-1] if c in a) - final[c]
             for c in final if any(c in a for a in class_acc[:-1])]
    return sum(drops) / len(drops) if drops else 0.0


def train_incremental(cfg: SharpConfig, replay: bool, data, on_episode_end=None) -> dict:
    """Class-incremental training over the episodes; after each: accuracy on all classes seen so far and on the old
    ones (seen before this episode), buffer drift (and with ``cfg.allocate`` the unit counts per layer).
    ``on_episode_end(episode, net, allocation)`` is called after each episode (allocation ``None`` unless allocating)."""
    (xtr, ytr), (xte, yte) = data
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(cfg.seed)
        net = SplitNet(xtr[0].numel(), cfg.width, int(ytr.max()) + 1)

    def adam():
        return torch.optim.Adam([{"params": net.bottom.parameters(), "lr": cfg.lr * cfg.bottom_lr_scale},
                                 {"params": net.top.parameters(), "lr": cfg.lr}])

    opt = adam()
    buf = ActivationBuffer(cfg.per_class, cfg.replay_classes, cfg.seed)
    gb = torch.Generator().manual_seed(cfg.seed + 1)
    gs = torch.Generator().manual_seed(cfg.seed + 2)
    masks = random_masks(prunable(net), cfg.sparsity, gs) if cfg.sparsity > 0 else None
    alloc = UnitAllocation(SplitNet.HIDDEN, [cfg.width] * 3, cfg.stm_tasks) if cfg.allocate else None
    if alloc is not None and masks is None:
        masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable(net).items()}
    if masks is not None:
        apply_masks(net, masks)
    params = dict(net.named_parameters())
    seen: list[int] = []
    out = {"acc_seen": [], "acc_old": [], "drift": [], "rewirings": 0, "class_acc": [], "units": []}
    step = 0
    n_blur = round(cfg.blurry * cfg.batch)
    for ep in episodes(ytr, cfg.classes_per_episode):
        m = torch.isin(ytr, torch.tensor(ep))
        x, y = xtr[m], ytr[m]
        xo, yo = xtr[~m], ytr[~m]
        if alloc is not None:
            opt = adam()                           # no moment estimates: a zero gradient moves nothing
        for t in range(cfg.steps_per_episode):
            if alloc is not None and t % -(-cfg.steps_per_episode // cfg.phases) == 0:   # a new phase
                with torch.no_grad():
                    alloc.select(net.hidden(x[:1024]), cfg.coverage)
                out["rewirings"] += bool(sum(alloc.rewire(params, masks, gs).values()))
            i = torch.randint(len(x), (cfg.batch - n_blur,), generator=gb)
            xb, yb = x[i], y[i]
            if n_blur and len(xo):                  # blurry boundaries: some samples of the other episodes' classes
                j = torch.randint(len(xo), (n_blur,), generator=gb)
                xb, yb = torch.cat([xb, xo[j]]), torch.cat([yb, yo[j]])
            loss = nn.functional.cross_entropy(net(xb), yb)
            if replay and len(buf):
                loss = loss + cfg.replay_weight * replay_loss(net, *buf.batch())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if masks is not None:
                mask_grads(net, masks)
            if alloc is not None:
                alloc.freeze_grads(params)
            opt.step()
            step += 1
            if masks is not None:
                apply_masks(net, masks)
                if alloc is None and step % cfg.rewire_every == 0:
                    masks = prune_and_regrow(net, masks, cfg.rewire_fraction, gs)
                    out["rewirings"] += 1
        out["drift"].append(buf.drift(net) if len(buf) else None)
        old = list(seen)
        seen += ep
        out["acc_seen"].append(accuracy(net, xte, yte, seen))
        out["acc_old"].append(accuracy(net, xte, yte, old) if old else None)
        out["class_acc"].append({c: accuracy(net, xte, yte, [c]) for c in seen})
        with torch.no_grad():
            buf.add(net.bottom(x), y, x)
        if alloc is not None:
            alloc.promote()
            out["units"].append(alloc.counts())
        if on_episode_end is not None:
            on_episode_end(len(out["acc_seen"]) - 1, net, alloc)
    out["final_old_acc"] = accuracy(net, xte, yte, seen[: -len(ep)])
    olds = [a for a in out["acc_old"] if a is not None]
    out["mean_old_acc"] = sum(olds) / len(olds) if olds else float("nan")
    out["forgetting"] = forgetting(out["class_acc"])
    out["replayed_classes"] = list(buf.order)
    out["masks"] = masks
    if masks is not None:
        params = dict(net.named_parameters())
        out["off_weights_nonzero"] = int(sum(int((params[n][~m] != 0).sum()) for n, m in masks.items()))
    return out


def run_sharp(cfg: SharpConfig) -> dict:
    """With vs without hidden-activation replay on class-incremental digits (``actlab.data.load_digits``); the
    check compares the accuracy on earlier classes averaged over episodes 2..n."""
    from actlab.data import load_digits

    tr, te = load_digits("train", seed=cfg.seed), load_digits("test", seed=cfg.seed)
    data = ((tr.x, tr.y), (te.x, te.y))
    runs = {"replay": train_incremental(cfg, True, data), "no_replay": train_incremental(cfg, False, data)}
    for r in runs.values():
        masks = r.pop("masks")
        r["sparsity"] = None if masks is None else sparsity_of(masks)
    rep = {"config": asdict(cfg), "runs": runs,
           "checks": {"old_acc_up": runs["replay"]["mean_old_acc"] > runs["no_replay"]["mean_old_acc"]}}
    if cfg.out:
        from actlab.train.report import plot_curves, write_json

        write_json(cfg.out, "sharp.json", rep)
        n = len(runs["replay"]["acc_old"])
        plot_curves(cfg.out, "sharp.png", {f"{k} (old classes)": (range(1, n + 1), r["acc_old"])
                                           for k, r in runs.items()},
                    xlabel="episode", ylabel="test accuracy on earlier classes", title="hidden-activation replay")
    return rep
