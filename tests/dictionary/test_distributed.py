"""Data-parallel training under torchrun (2 gloo processes): the ranks read different shards yet end with identical
weights (gradients and first-batch statistics are averaged); tokens count over all ranks."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = r'''
import sys, torch
torch.set_num_threads(1)
from actlab import distributed as D
from actlab.dictionary import DictConfig
from actlab.dictionary.data import tensor_source
from actlab.dictionary.synthetic import planted
from actlab.dictionary.trainer import TrainConfig, Trainer
D.init_from_env()
r, w = D.rank(), D.world_size()
x, _, _ = planted(4096, d=16, m=32, p=0.1, seed=3)
src = tensor_source(x[r::w], 128, seed=5)
tc = TrainConfig(total_tokens=12 * 128 * w, batch_size=128, lr=3e-3, warmup_steps=2, progress=False,
                 out=sys.argv[1] + f"/rank{r}" if w > 1 else sys.argv[1] + "/single")
m = Trainer(DictConfig(arch="topk", d_in=16, d_sae=64, k=4), tc, src).fit()
if w > 1:
    m.save(sys.argv[1] + f"/rank{r}")
D.destroy()
'''


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
def test_two_rank_data_parallel(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", "29517", str(script), str(tmp_path)],
                   check=True, env=env, timeout=300, capture_output=True)
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, env=env, timeout=300)
    a = load_file(str(tmp_path / "rank0" / "dictionary.safetensors"))
    b = load_file(str(tmp_path / "rank1" / "dictionary.safetensors"))
    s = load_file(str(tmp_path / "single" / "dictionary.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["W_dec"], s["W_dec"])
    cfg = json.loads((Path(tmp_path) / "rank0" / "cfg.json").read_text())
    assert cfg["train"]["world"] == 2 and cfg["train"]["tokens"] == 12 * 128 * 2
