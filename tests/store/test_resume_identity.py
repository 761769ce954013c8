"""Resume identity (issue 14 item 8): a local model folder whose weights were swapped between two harvest runs
keeps its name and config.json; the weights fingerprint refuses the resume, naming both fingerprints."""
import re

import pytest
import torch

from actlab import load_model
from actlab.models.tiny import build_tiny
from actlab.store import HarvestConfig, StoreError, harvest
from actlab.store.fingerprint import weights_fingerprint


def _save_folder(path, seed):
    module, tok = build_tiny("tiny-llama", seed=seed)
    module.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)


def _cfg(data, out, tokens):
    return HarvestConfig(data=str(data), sites=["blocks.0.resid_post"], out=str(out), tokens=tokens, store_dtype="fp32",
                         context_length=32, batch_size=4, shard_rows=200, progress=False)


def test_swapped_weights_refuse_resume(corpus, tmp_path):
    folder = tmp_path / "model"
    _save_folder(folder, seed=0)
    m0 = load_model(folder)
    out = tmp_path / "acts"
    st = harvest(m0, _cfg(corpus, out, 400))
    assert len(st) == 400
    # the same weights, loaded again, resume (the fingerprint is stable across loads)
    fp0 = weights_fingerprint(load_model(folder))
    assert fp0 == weights_fingerprint(m0) == st.manifest["harvest"]["weights"]
    assert len(harvest(load_model(folder), _cfg(corpus, out, 400))) == 400
    # swap the weights in place: same folder name, same config.json
    cfg_before = (folder / "config.json").read_bytes()
    _save_folder(folder, seed=1)
    assert (folder / "config.json").read_bytes() == cfg_before
    m1 = load_model(folder)
    assert (m1.name, m1.revision) == (m0.name, m0.revision)
    fp1 = weights_fingerprint(m1)
    assert fp1 != fp0
    with pytest.raises(StoreError, match=re.escape(f"harvested from other weights: the folder has weights "
                                                   f"fingerprint {fp0}") + ".*" + re.escape(f"has weights "
                                                                                         f"fingerprint {fp1}")) as e:
        harvest(m1, _cfg(corpus, out, 400))
    assert "differing settings" not in str(e.value)          # the weights are the only difference


def test_fingerprint_sees_one_changed_tensor_and_dtype(tiny):
    m = load_model("tiny-gpt2")
    fp = weights_fingerprint(m)
    assert fp == weights_fingerprint(load_model("tiny-gpt2"))
    with torch.no_grad():
        m.module.transformer.ln_f.bias.add_(1e-3)          # a small tensor: sampled whole
    assert weights_fingerprint(m) != fp
    big = load_model("tiny-gpt2")
    with torch.no_grad():
        big.module.transformer.h[1].mlp.c_fc.weight.mul_(1.01)   # a fine-tune touching every entry
    assert weights_fingerprint(big) != fp
    assert weights_fingerprint(load_model("tiny-gpt2", dtype="bf16")) != fp


HOLDER = """
import sys
from actlab.store import HarvestConfig, harvest
H = sys.modules["actlab.store.harvest"]
def slow(*a, **k):           # hold the folder: announce, then wait to be killed
    print("running", flush=True)
    import time
    time.sleep(120)
H._run_rank = slow
from actlab import load_model
harvest(load_model("tiny-llama"), HarvestConfig(data=sys.argv[1], sites=["blocks.0.resid_post"], out=sys.argv[2],
                                                 tokens=64, store_dtype="fp32", context_length=32, batch_size=4,
                                                 shard_rows=200, progress=False, estimate=False))
"""


def test_second_harvest_into_one_folder_is_refused(tiny, corpus, tmp_path):
    """Issue 14 item 11: two harvests into one folder both ran; the second is refused naming the first's PID."""
    import os
    import subprocess
    import sys

    out = tmp_path / "acts"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(corpus), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = proc.stdout.readline().strip()
        assert line == "running", line + proc.stdout.read()[-2000:]
        with pytest.raises(StoreError, match=rf"acts is in use by another actlab process \(pid {proc.pid}\)"):
            harvest(tiny("tiny-llama"), _cfg(corpus, out, 64))
    finally:
        proc.kill()
        proc.wait()
    st = harvest(tiny("tiny-llama"), _cfg(corpus, out, 64))     # the holder died: the lock went with it
    assert st.complete and len(st) == 64


def test_edited_data_refuses_resume(tiny, corpus, tmp_path):
    """The same data path with other content (same size: one letter changed) is another harvest."""
    data = tmp_path / "docs.jsonl"
    data.write_bytes(corpus.read_bytes())
    out = tmp_path / "acts"
    harvest(tiny("tiny-llama"), _cfg(data, out, 64))
    raw = bytearray(data.read_bytes())
    i = raw.index(b"cat")
    raw[i] = ord("b")                                             # "cat" -> "bat", size unchanged
    data.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"belongs to another harvest; differing settings: data_sha256"):
        harvest(tiny("tiny-llama"), _cfg(data, out, 64))


def test_fingerprint_samples_densely():
    """An entry at the sampled grid's second point (flat index ~2 of 16,384) changes the fingerprint: the sample
    is 8,192 evenly spaced entries per tensor, not a handful."""
    SAMPLE = 8192                                                # the documented sample size

    m = load_model("tiny-gpt2")
    fp = weights_fingerprint(m)
    w = m.module.transformer.h[0].mlp.c_fc.weight
    n = w.numel()
    assert n > SAMPLE
    idx = int(torch.linspace(0, n - 1, SAMPLE, dtype=torch.float64).round().long()[1])
    with torch.no_grad():
        w.view(-1)[idx] += 0.5
    assert weights_fingerprint(m) != fp
