"""The lm-emergence recipe at toy size: it runs the one LM trainer of ``actlab.stats`` (same schedule, same loop)
with a checkpoint tracker as its callback; checkpoints land at ``checkpoint_steps`` and hold the model of that step."""
import json

import torch

from actlab.stats import CheckpointSeriesConfig, train_checkpoints
from actlab.train import LmEmergenceConfig, load_checkpoint, read_metrics
from actlab.train.lm import corpus_contexts, make_lm, run_lm_emergence, series_config


def test_lm_emergence_runs_the_shared_trainer(tmp_path, one_thread):
    cfg = LmEmergenceConfig(out=str(tmp_path), n_layers=1, d_model=32, n_heads=2, d_ff=64, context=32, batch=4,
                            steps=8, n_checkpoints=6, probe_contexts=2, max_tokens=4000, fit=False)
    rep = run_lm_emergence(cfg)
    recs = read_metrics(tmp_path)
    assert [r["step"] for r in recs] == rep["steps"] == CheckpointSeriesConfig(steps=8, n_checkpoints=6).schedule()
    assert "train_loss" not in recs[0] and all("train_loss" in r for r in recs[1:])
    assert recs[-1]["probe_loss"] < recs[0]["probe_loss"] - 0.05
    assert len(recs[0]["sparsity"]) == 1 and len(recs[0]["massive.top1"]) == 1
    assert json.loads((tmp_path / "lm_emergence.json").read_text())["steps"] == rep["steps"] and rep["fits"] == {}
    assert (tmp_path / "lm_emergence.png").read_bytes()[:4] == b"\x89PNG"
    # the saved step-8 model is the one the stats trainer produces from the same init, data and config
    from actlab.models import byte_tokenizer
    tok = byte_tokenizer()
    train = corpus_contexts(cfg, tok)[cfg.probe_contexts:]
    ref = make_lm(cfg, len(tok))
    losses = train_checkpoints(series_config(cfg), progress=False, module=ref, contexts=train,
                               on_checkpoint=lambda step, m, lo: lo)
    assert [r.get("train_loss") for r in recs] == losses
    got = make_lm(cfg, len(tok))
    assert load_checkpoint(tmp_path / "checkpoints" / "step-8", got) == 8
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in got.state_dict().items())
