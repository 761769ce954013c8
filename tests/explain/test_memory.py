"""Flat memory: caching 20x the tokens raises the peak RSS by far less than the entries it writes (which are
flushed to shards, not held). The peak RSS of one run varies by up to ~6 MB between identical runs here, so the
larger run writes 51 MiB of entries: a quarter of that stands well clear of the noise."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys, torch
    from actlab.dictionary import DictConfig, build
    from actlab.explain import CacheConfig, Chunk, DictionaryLatents, build_cache

    class Generated:
        '''Chunks made on the fly (nothing held): the row source itself has flat memory.'''
        def __init__(self, n_chunks):
            self.n_chunks, self.batch_rows, self.n_rows = n_chunks, 2048, n_chunks * 2048
        def chunks(self, start=0):
            for c in range(start, self.n_chunks):
                g = torch.Generator().manual_seed(c)
                yield Chunk(torch.randn(2048, 16, generator=g), torch.randint(0, 100, (2048,), generator=g),
                            torch.full((2048,), c), torch.arange(2048))
        def describe(self):
            return {"type": "generated", "n_chunks": self.n_chunks}

    sae = build(DictConfig(arch="topk", d_in=16, d_sae=128, k=16), seed=0)
    build_cache(Generated(int(sys.argv[2])), DictionaryLatents(sae), sys.argv[1],
                CacheConfig(shard_entries=1 << 15, progress=False))
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print(int(line.split()[1]))
""")


def _peak_kib(out, n_chunks):
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(out), str(n_chunks)], check=False, capture_output=True,
                       text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def test_peak_rss_flat_over_20x_tokens(tmp_path):
    small = _peak_kib(tmp_path / "a", 5)      # 10,240 tokens, 164k entries
    large = _peak_kib(tmp_path / "b", 100)    # 204,800 tokens, 3.3M entries = 51 MiB of (row, latent, value)
    entries_mib = 100 * 2048 * 16 * 16 / 2**20
    assert (large - small) / 1024 < 0.25 * entries_mib, (small, large)
