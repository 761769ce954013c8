"""Crash safety: SIGKILL a harvest mid-run, rerun the same command, get exactly the rows of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import torch

from actlab.cli import main
from actlab.store import ActivationStore

SITES = "blocks.0.resid_post,blocks.1.mlp_out"

# the child harvests with a throttled forward pass so that the kill lands mid-run
CHILD = """
import sys, time
import actlab.models.model as mm
orig = mm.Model.record
def slow(self, *a, **k):
    time.sleep(0.04)
    return orig(self, *a, **k)
mm.Model.record = slow
from actlab.cli import main
main(sys.argv[1:])
"""


def args(data, out):
    return ["harvest", "tiny-llama", "--data", str(data), "--sites", SITES, "--tokens", "6000", "--out", str(out),
            "--store-dtype", "fp32", "--context-length", "32", "--batch-size", "4", "--shard-rows", "500", "--noprogress"]


def test_sigkill_then_resume_equals_uninterrupted(corpus, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args(corpus, out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    prog = out / "progress-rank000.json"
    deadline = time.time() + 120
    n_listed = 0
    while time.time() < deadline and proc.poll() is None:
        if prog.exists():
            n_listed = len(json.loads(prog.read_text())["shards"])
            if n_listed >= 3:
                break
        time.sleep(0.02)
    assert proc.poll() is None, f"harvest ended before the kill: {proc.stdout.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # killed mid-run: incomplete, and every listed shard is whole
    st = ActivationStore(out)
    assert not st.complete and 0 < len(st) < 6000 and len(st) % 500 == 0
    assert st.verify() == []
    listed = {s["file"] for s in st.shards}
    assert all(not f.name.endswith(".tmp") for f in out.iterdir() if f.name in listed)

    main(args(corpus, out))  # the same command again: resumes
    main(args(corpus, tmp_path / "clean"))  # uninterrupted reference
    a, b = ActivationStore(out), ActivationStore(tmp_path / "clean")
    assert a.complete and len(a) == len(b) == 6000
    assert not list(out.glob(".*.tmp"))
    assert [s["rows"] for s in a.shards] == [s["rows"] for s in b.shards]
    for s in SITES.split(","):
        assert torch.equal(a.read(s, slice(None)), b.read(s, slice(None)))
    assert torch.equal(a.tokens(slice(None)), b.tokens(slice(None)))
    assert all(torch.equal(x, y) for x, y in zip(a.doc_pos(slice(None)), b.doc_pos(slice(None))))
    assert a.verify() == []
