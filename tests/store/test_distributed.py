"""torchrun with 2 gloo processes yields the same set of rows as one process."""
import os
import subprocess
import sys

import torch

from actlab.cli import main
from actlab.store import ActivationStore


def test_torchrun_two_gloo_ranks_equal_single_process(corpus, tmp_path):
    common = ["tiny-llama", "--data", str(corpus), "--sites", "blocks.0.resid_post,blocks.1.attn.z", "--tokens",
              "3000", "--store-dtype", "fp32", "--context-length", "32", "--shard-rows", "500", "--noprogress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "actlab", "harvest", *common, "--out", str(tmp_path / "two")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    main(["harvest", *common, "--out", str(tmp_path / "one")])
    two, one = ActivationStore(tmp_path / "two"), ActivationStore(tmp_path / "one")
    assert two.complete and two.manifest["world_size"] == 2 and len(two) == len(one) == 3000
    assert {s["rank"] for s in two.shards} == {0, 1}
    assert two.verify() == []

    def by_key(st):
        d, p = st.doc_pos(slice(None))
        keys = (d * 100_000 + p).tolist()
        order = sorted(range(len(keys)), key=keys.__getitem__)
        return [keys[i] for i in order], torch.tensor(order)

    k2, o2 = by_key(two)
    k1, o1 = by_key(one)
    assert k2 == k1 and len(set(k1)) == 3000  # same rows, no duplicates
    assert torch.equal(two.tokens(o2), one.tokens(o1))
    for s in one.sites:
        torch.testing.assert_close(two.read(s, o2), one.read(s, o1), rtol=1e-5, atol=1e-6)
