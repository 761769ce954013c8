"""`sae train` survives SIGKILL: time-based checkpoints by default, a rerun resumes from the last one saying so,
metrics.jsonl keeps one line per logged step, and the result equals an uninterrupted run bit for bit."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from actlab.cli import main
from actlab.dictionary import load


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny):
    from actlab.store import HarvestConfig, harvest
    root = tmp_path_factory.mktemp("sae_kill")
    data = root / "texts.txt"
    data.write_text("\n".join(f"Row {i}: {w} and {i % 5} more {w}s." for i in range(40) for w in ("ant", "bee")))
    harvest(tiny("tiny-llama"), HarvestConfig(data=str(data), sites=["blocks.1.resid_post"], out=str(root / "store"),
                                              tokens=2048, context_length=32, dtype="fp32", progress=False))
    return root


def _args(store, out, steps):
    return ["sae", "train", "--store", str(store / "store"), "--site", "blocks.1.resid_post", "--k", "4",
            "--expansion", "2", "--tokens", str(64 * steps), "--batch-size", "64", "--lr", "1e-3",
            "--warmup-steps", "5", "--threads", "1", "--out", str(out)]


@pytest.mark.slow
def test_sigkill_then_resume(store):
    steps = 800
    out = store / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "actlab", *_args(store, out, steps), "--checkpoint-minutes", "0.004"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:         # wait for a checkpoint and some metrics written after it
        ptr = out / "checkpoint.json"
        if ptr.exists() and (out / "metrics.jsonl").exists():
            ck = json.loads(ptr.read_text())["latest"]
            last = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
            if last and last[-1] > int(ck.split("-")[1]):
                break
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be killed: {proc.communicate()[1].decode()[-2000:]}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "dictionary.safetensors").exists()
    ck_step = int(json.loads((out / "checkpoint.json").read_text())["latest"].split("-")[1])
    assert 0 < ck_step < steps

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from checkpoint {out / f'ckpt-{ck_step:08d}'} at step {ck_step}" in again.stderr
    logged = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(10, steps + 1, 10))            # no duplicated or missing lines
    resumed = load(out)
    assert resumed.cfg.train["steps"] == steps

    # the same run without interruption gives the same dictionary, bit for bit
    main(_args(store, store / "whole", steps) + ["--checkpoint-minutes", "0"])
    whole = load(store / "whole")
    for name, p in whole.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[name]), name
