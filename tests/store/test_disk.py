"""Files honour the umask (issue 14 item 13: they were written 0600) and a harvest into a really full filesystem
stops with a clear error, keeps every complete shard and resumes (issue 14 item 12)."""
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from actlab.store import ActivationStore, HarvestConfig, StoreError, harvest


def _cfg(data, out, **kw):
    return HarvestConfig(**{**dict(data=str(data), sites=["blocks.0.resid_post", "blocks.1.attn.z"], out=str(out),
                                   tokens=1200, store_dtype="fp32", context_length=32, batch_size=4, shard_rows=256,
                                   progress=False), **kw})


def test_files_follow_the_umask_and_shards_are_plain_safetensors(tiny, corpus, tmp_path):
    old = os.umask(0o027)
    try:
        st = harvest(tiny("tiny-llama"), _cfg(corpus, tmp_path / "o"))
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "o").iterdir()]
    assert len(files) >= 6
    for p in files:
        assert (p.stat().st_mode & 0o777) == 0o640, p
    sh = st.shards[1]
    plain = load_file(str(tmp_path / "o" / sh["file"]))       # the raw writer's files are plain safetensors
    rows = slice(256, 512)
    assert torch.equal(plain["blocks.0.resid_post"], st.read("blocks.0.resid_post", rows))
    assert torch.equal(plain["_tokens"], st.tokens(rows).to(torch.int32))
    assert plain["blocks.1.attn.z"].shape == (256, st.dims["blocks.1.attn.z"])
    raw = (tmp_path / "o" / sh["file"]).read_bytes()            # header padded to 8 bytes: aligned tensor data
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0 and raw[8 + n - 1:8 + n] in (b" ", b"}")
    assert all(t["offsets"][0] % 4 == 0 for t in sh["tensors"].values())


@pytest.fixture
def small_fs(tmpfs):
    return tmpfs("256k")


def test_harvest_into_a_full_filesystem(tiny, corpus, tmp_path, small_fs):
    m = tiny("tiny-llama")
    out = small_fs / "acts"
    # 256 KiB holds a few 256-row shards of 64 + 64 floats (~130 KiB each with metadata), not 1200 rows.
    # The up-front estimate refuses this run; the disk filling up *during* a run (other writers) must still fail
    # cleanly, so that check is switched off here.
    with pytest.raises(ValueError, match="not enough disk"):
        harvest(m, _cfg(corpus, out))
    assert not out.exists()
    with pytest.raises(StoreError, match=r"(?i)writing .* failed: .*no space left on device.*complete and kept; "
                                         r"free space and rerun"):
        harvest(m, _cfg(corpus, out, estimate=False))
    st = ActivationStore(out)
    assert not st.complete and len(st) % 256 == 0 and st.verify() == []
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    ref = harvest(m, _cfg(corpus, tmp_path / "ref"))
    if len(st):
        assert torch.equal(st.read("blocks.0.resid_post", slice(None)), ref.read("blocks.0.resid_post",
                                                                                   slice(0, len(st))))
    # space again (a larger filesystem): the same command resumes and equals an uninterrupted run
    subprocess.run(["mount", "-o", "remount,size=4m", str(small_fs)], check=True)
    st = harvest(m, _cfg(corpus, out))
    assert st.complete and len(st) == 1200 and st.verify() == []
    assert torch.equal(st.read("blocks.1.attn.z", slice(None)), ref.read("blocks.1.attn.z", slice(None)))
