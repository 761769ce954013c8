"""Harvest estimate: time from a calibration batch and disk from widths, against the actual run; dry run; a disk
too small is refused before anything is written."""
from __future__ import annotations

import time

import pytest

from actlab.store import HarvestConfig, harvest
from actlab.store.estimate import estimate_harvest

TEXT = "\n".join(f"Row {i}: the {w} met {i % 7} other {w}s by the river." for i in range(200) for w in ("ant", "bee"))


def _cfg(tmp_path, out, **kw):
    data = tmp_path / "texts.txt"
    data.write_text(TEXT)
    return HarvestConfig(data=str(data), sites=["blocks.1.resid_post"], out=str(out), tokens=4096,
                         context_length=32, batch_size=8, store_dtype="fp32", progress=False, **kw)


def test_estimate_vs_actual(tiny, tmp_path):
    m = tiny("tiny-llama")
    cfg = _cfg(tmp_path, tmp_path / "store")
    est = estimate_harvest(m, cfg, cfg.tokens)
    t0 = time.perf_counter()
    st = harvest(m, cfg)
    actual = time.perf_counter() - t0
    assert 0.1 * actual < est.seconds < 10 * actual, (est.seconds, actual)     # loose: a shared machine
    on_disk = sum(p.stat().st_size for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert 0.6 * on_disk < est.disk_bytes < 1.6 * on_disk, (est.disk_bytes, on_disk)
    assert len(st) <= cfg.tokens
    assert est.peak_bytes > sum(p.numel() * 4 for p in m.module.parameters())


def test_dry_run_writes_nothing(tiny, tmp_path, capsys):
    out = tmp_path / "dry"
    assert harvest(tiny("tiny-llama"), _cfg(tmp_path, out, dry_run=True)) is None
    assert not out.exists()
    assert "estimate: 4096 tokens" in capsys.readouterr().err


def test_refuses_when_the_disk_cannot_hold_it(tiny, tmp_path, tmpfs):
    small = tmpfs("64k")                       # 4096 rows x 64 fp32 = 1 MiB of activations
    with pytest.raises(ValueError, match="not enough disk"):
        harvest(tiny("tiny-llama"), _cfg(tmp_path, small / "store"))
    assert not (small / "store").exists()


def test_a_resumed_harvest_estimates_only_the_rows_left(tiny, tmp_path, capsys, monkeypatch):
    """A killed harvest's complete shards are not counted again: the resume's estimate (time and disk) covers the
    rows still to write, so a disk that holds the rest is not refused."""
    import errno

    from actlab.store import ActivationStore
    from actlab.store import writer as writer_mod

    m = tiny("tiny-llama")
    real, calls = writer_mod._save, {"n": 0}

    def full_after_two(tensors, path):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path)

    out = tmp_path / "store"
    monkeypatch.setattr(writer_mod, "_save", full_after_two)
    with pytest.raises(Exception, match="No space left"):
        harvest(m, _cfg(tmp_path, out, shard_rows=1024))
    monkeypatch.setattr(writer_mod, "_save", real)
    done = len(ActivationStore(out))
    assert done == 2048
    capsys.readouterr()
    assert harvest(m, _cfg(tmp_path, out, dry_run=True, shard_rows=1024)) is None
    assert f"estimate: {4096 - done} tokens" in capsys.readouterr().err
    full = estimate_harvest(m, _cfg(tmp_path, out), 4096).disk_bytes
    monkeypatch.setattr("actlab.store.estimate.free_bytes", lambda _: full * 3 // 4)   # holds the rest, not all
    assert len(harvest(m, _cfg(tmp_path, out, shard_rows=1024))) == 4096
