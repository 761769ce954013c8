"""Latent cache: values equal the source's encode on the same rows, statistics equal dense ones, resume after
SIGKILL gives identical shards, other settings on the same folder are refused."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from actlab.artifact import ArtifactError
from actlab.dictionary import DictConfig, build
from actlab.explain import (
    CacheConfig,
    DictionaryLatents,
    DirectionLatents,
    LatentCache,
    NeuronLatents,
    TensorRows,
    build_cache,
)
from actlab.explain.cache import hist_edges


def _data(n=1000, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, 50, (n,), generator=g)


def test_cache_equals_encode_and_stats(tmp_path):
    x, tok = _data()
    sae = build(DictConfig(arch="topk", d_in=16, d_sae=64, k=4), seed=1)
    doc = torch.arange(1000) // 100
    cfg = CacheConfig(shard_entries=700, progress=False)
    c = build_cache(TensorRows(x, tok, doc, torch.arange(1000) % 100, batch_rows=128), DictionaryLatents(sae),
                    tmp_path / "c", cfg)
    z = sae.encode(x)
    assert len(c.config["shards"]) > 2 and c.n_rows == 1000
    for j in range(64):
        assert torch.equal(c.dense(j), z[:, j]), j
    assert torch.equal(c.count, (z > 0).sum(0))
    assert torch.equal(c.max, z.max(0).values.clamp_min(0))
    assert torch.allclose(c.sum, z.double().sum(0))
    edges = hist_edges(cfg)
    j = int(c.count.argmax())
    v = z[:, j][z[:, j] > 0]
    ref = torch.histc(torch.bucketize(v, edges[1:-1]).float(), bins=cfg.hist_bins, min=0, max=cfg.hist_bins - 1)
    assert torch.equal(c.hist[j], ref.long())
    assert torch.equal(c.row_table("tokens"), tok) and torch.equal(c.row_table("doc"), doc)
    assert torch.equal(c.row_table("pos"), torch.arange(1000) % 100)
    assert torch.allclose(c.density, (z > 0).double().mean(0))
    again = LatentCache(tmp_path / "c")   # reloaded from disk
    assert torch.equal(again.dense(3), z[:, 3])


def test_neurons_and_directions_threshold(tmp_path):
    x, tok = _data(300, 8)
    c = build_cache(TensorRows(x, tok, batch_rows=64), NeuronLatents(8, "blocks.0.mlp_act"), tmp_path / "n",
                    CacheConfig(threshold=0.5, progress=False))
    for j in range(8):
        assert torch.equal(c.dense(j), torch.where(x[:, j] > 0.5, x[:, j], 0.0))
    D = torch.randn(3, 8)
    c = build_cache(TensorRows(x, tok, batch_rows=64), DirectionLatents(D, "s"), tmp_path / "d",
                    CacheConfig(progress=False))
    p = x @ (D / D.norm(dim=1, keepdim=True)).t()
    assert torch.allclose(c.dense(1), p[:, 1].clamp_min(0))


def test_other_settings_refused_and_finished_reused(tmp_path):
    x, tok = _data(200, 8)
    src = NeuronLatents(8, "s")
    build_cache(TensorRows(x, tok, batch_rows=64), src, tmp_path / "c", CacheConfig(progress=False))
    c = build_cache(TensorRows(x, tok, batch_rows=64), src, tmp_path / "c", CacheConfig(progress=False))
    assert c.n_rows == 200
    with pytest.raises(ArtifactError, match="other settings.*threshold"):
        build_cache(TensorRows(x, tok, batch_rows=64), src, tmp_path / "c", CacheConfig(threshold=1.0,
                                                                                         progress=False))
    (tmp_path / "c" / "cfg.json").unlink()   # as if killed before the end: progress.json decides
    with pytest.raises(ArtifactError, match="other settings.*threshold"):
        build_cache(TensorRows(x, tok, batch_rows=64), src, tmp_path / "c", CacheConfig(threshold=1.0,
                                                                                         progress=False))
    assert build_cache(TensorRows(x, tok, batch_rows=64), src, tmp_path / "c", CacheConfig(progress=False)).n_rows \
        == 200
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(ArtifactError, match="not empty"):
        build_cache(TensorRows(x, tok), src, tmp_path / "junk", CacheConfig(progress=False))
    with pytest.raises(ValueError, match="threshold"):
        CacheConfig(threshold=-1)


SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from actlab.dictionary import DictConfig, build
    from actlab.explain import CacheConfig, DictionaryLatents, TensorRows, build_cache

    class Slow(TensorRows):
        def chunks(self, start=0):
            for c in super().chunks(start):
                time.sleep(float(sys.argv[2]))
                yield c

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=g)
    tok = torch.randint(0, 50, (2000,), generator=g)
    sae = build(DictConfig(arch="topk", d_in=16, d_sae=64, k=4), seed=1)
    build_cache(Slow(x, tok, batch_rows=100), DictionaryLatents(sae), sys.argv[1],
                CacheConfig(shard_entries=600, progress=False))
""")


def _run(out, delay):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(delay)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_sigkill_resume_identical_shards(tmp_path):
    ref = tmp_path / "ref"
    assert _run(ref, 0).wait(60) == 0
    out = tmp_path / "killed"
    p = _run(out, 0.15)
    deadline = time.time() + 60
    while time.time() < deadline:
        prog = out / "progress.json"
        if prog.exists() and prog.read_text().count('"file"') >= 3:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "cfg.json").exists()
    (out / ".shard-000009.safetensors.1.ab.tmp").write_bytes(b"half")   # a write cut by the kill
    (out / "shard-000099.safetensors").write_bytes(b"unlisted")          # written, never listed
    assert _run(out, 0).wait(60) == 0
    names = sorted(f.name for f in ref.iterdir() if f.name.startswith("shard-"))
    assert len(names) > 4
    assert names == sorted(f.name for f in out.iterdir() if f.name.startswith("shard-"))
    for n in names:
        assert (ref / n).read_bytes() == (out / n).read_bytes(), n
    assert torch.equal(LatentCache(ref).hist, LatentCache(out).hist)
    assert torch.equal(LatentCache(ref).dense(5), LatentCache(out).dense(5))
    assert not [f for f in out.iterdir() if f.name.endswith(".tmp")]


def test_rank_split_equals_single_process(tmp_path):
    """Chunks split by rank (as under torchrun), each rank resumable in its own folder, merged by the last one:
    the same totals, row tables and entries as one process."""
    g = torch.Generator().manual_seed(3)
    x = torch.relu(torch.randn(1000, 6, generator=g) - 0.5)
    tok = torch.randint(0, 50, (1000,), generator=g)
    cfg = CacheConfig(progress=False, shard_entries=200)
    one = build_cache(TensorRows(x, tok, batch_rows=64), NeuronLatents(6, "s"), tmp_path / "one", cfg)
    out = tmp_path / "split"
    assert build_cache(TensorRows(x, tok, batch_rows=64), NeuronLatents(6, "s"), out, cfg, rank=0, world=3) is None
    assert build_cache(TensorRows(x, tok, batch_rows=64), NeuronLatents(6, "s"), out, cfg, rank=2, world=3) is None
    three = build_cache(TensorRows(x, tok, batch_rows=64), NeuronLatents(6, "s"), out, cfg, rank=1, world=3)
    assert three is not None and three.n_rows == one.n_rows == 1000
    assert {s["file"].split("/")[0] for s in three.config["shards"]} == {"rank-000", "rank-001", "rank-002"}
    for k in ("count", "max", "sum", "hist"):
        assert torch.equal(getattr(three, k), getattr(one, k)), k
    for k in ("tokens", "doc", "pos"):
        assert torch.equal(three.row_table(k), one.row_table(k))
    for j in range(6):
        assert all(torch.equal(a, b) for a, b in zip(three.latent(j), one.latent(j)))
        assert torch.equal(three.dense(j), x[:, j] * (x[:, j] > 0))
    again = build_cache(TensorRows(x, tok, batch_rows=64), NeuronLatents(6, "s"), out, cfg)   # finished: reused
    assert again.config == three.config


TORCHRUN = r"""
import sys, time, torch
from actlab import distributed
from actlab.explain import CacheConfig, NeuronLatents, TensorRows, build_cache
distributed.init_from_env()


class Slow(NeuronLatents):   # rank 1 finishes last: rank 0 must wait for it before merging
    def __call__(self, x):
        if distributed.rank() == 1:
            time.sleep(0.2)
        return super().__call__(x)

g = torch.Generator().manual_seed(3)
x = torch.relu(torch.randn(600, 5, generator=g) - 0.5)
tok = torch.randint(0, 50, (600,), generator=g)
c = build_cache(TensorRows(x, tok, batch_rows=50), Slow(5, "s"), sys.argv[1], CacheConfig(progress=False))
open(f"{sys.argv[1]}.rank{distributed.rank()}", "w").write(str(None if c is None else c.n_rows))
distributed.destroy()
"""


def test_torchrun_two_ranks(tmp_path):
    """A real torchrun (2 CPU processes, gloo): rank 0 merges, the cache equals a single-process one."""
    script = tmp_path / "run.py"
    script.write_text(TORCHRUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sk:   # a free port (torchrun's --master-port 0 hangs with gloo)
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        str(port), str(script), str(tmp_path / "c2")], env=env, capture_output=True, text=True,
                       check=False,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "c2.rank0").read_text() == "600" and (tmp_path / "c2.rank1").exists()
    subprocess.run([sys.executable, str(script), str(tmp_path / "c1")], env=env, check=True, capture_output=True)
    a, b = LatentCache(tmp_path / "c2"), LatentCache(tmp_path / "c1")
    assert len({s["file"].split("/")[0] for s in a.config["shards"]}) == 2
    for k in ("count", "max", "sum", "hist"):
        assert torch.equal(getattr(a, k), getattr(b, k))
    assert all(torch.equal(u, v) for u, v in zip(a.entries(), b.entries()))
