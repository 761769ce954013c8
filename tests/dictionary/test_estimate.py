"""Estimate before a long run: time from calibration steps, memory and disk from shapes; dry run; full disk refused."""
from __future__ import annotations

import time

import pytest
import torch

from actlab.dictionary import DictConfig
from actlab.dictionary.estimate import estimate, sizes
from actlab.dictionary.run import train_sites
from actlab.dictionary.trainer import TrainConfig, Trainer

X = torch.randn(256 * 60, 48, generator=torch.Generator().manual_seed(0))


def source(epoch):
    for i in range(X.shape[0] // 256):
        yield X[i * 256:(i + 1) * 256]


DC = DictConfig(arch="topk", d_in=48, d_sae=768, k=8)


def test_estimate_vs_actual(tmp_path):
    tc = TrainConfig(total_tokens=256 * 60, batch_size=256, progress=False, out=str(tmp_path / "run"),
                     checkpoint_minutes=5.0)
    est = estimate(DC, tc, source)
    assert est.steps == 60
    t0 = time.perf_counter()
    Trainer(DC, tc, source).fit()
    actual = time.perf_counter() - t0
    assert 0.2 * actual < est.seconds < 5 * actual, (est.seconds, actual)           # loose: a shared machine
    on_disk = sum(p.stat().st_size for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert 0.5 * on_disk < est.disk_bytes < 2.0 * on_disk, (est.disk_bytes, on_disk)
    params = sum(p.numel() * 4 for p in Trainer(DC, tc.__class__(total_tokens=256, batch_size=256, progress=False),
                                                  source).model.parameters())
    assert est.peak_bytes >= 4 * params                                           # weights, grads, 2 Adam moments
    assert est.disk_free_bytes is not None and est.disk_free_bytes > 0


def test_disk_grows_with_checkpoints():
    base = TrainConfig(total_tokens=256, batch_size=256, checkpoint_minutes=0)
    with_ck = TrainConfig(total_tokens=256, batch_size=256, checkpoint_minutes=5)
    assert sizes(DC, with_ck)[1] > 3 * sizes(DC, base)[1]                         # + weights and 2 moments


def test_dry_run_trains_nothing(tmp_path, monkeypatch, capsys):
    import actlab.dictionary.run as run
    monkeypatch.setattr(run, "site_source", lambda *a, **k: (source, 48, None, "synthetic"))
    out = tmp_path / "dry"
    got = train_sites(["blocks.0.resid_post"], {"arch": "topk", "d_sae": 768, "k": 8},
                      TrainConfig(total_tokens=256 * 40, batch_size=256, progress=False, out=str(out), dry_run=True))
    assert got == [] and not out.exists()
    assert "estimate: 40 steps" in capsys.readouterr().err


def test_refuses_when_the_disk_cannot_hold_it(tmpfs, monkeypatch):
    import actlab.dictionary.run as run
    monkeypatch.setattr(run, "site_source", lambda *a, **k: (source, 48, None, "synthetic"))
    small = tmpfs("64k")                                   # a real filesystem of 64 KiB; the dictionary is ~300 KiB
    with pytest.raises(ValueError, match="not enough disk"):
        train_sites(["blocks.0.resid_post"], {"arch": "topk", "d_sae": 768, "k": 8},
                    TrainConfig(total_tokens=256 * 10, batch_size=256, progress=False, out=str(small / "sae")))
    assert not (small / "sae").exists()
