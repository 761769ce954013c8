"""The one LM training loop and log-spaced schedule (``actlab.stats.train_checkpoints``), which both ``actlab stats
train-checkpoints`` and ``actlab train lm-emergence`` run: the schedule, the learning-rate shape, checkpoints taken
before their step's update, the same run twice is bit-identical, a caller's module/contexts/callback."""
import math
from itertools import pairwise

import pytest
import torch

from actlab.stats import CheckpointSeriesConfig, train_checkpoints
from actlab.stats.train_checkpoints import WARMUP, checkpoint_steps, lr_factor

TINY = {"n_layers": 1, "d_model": 32, "d_ff": 64, "n_heads": 2, "context_length": 32, "batch_size": 4,
        "max_tokens": 4000}


def test_schedule_is_log_spaced_and_checked():
    s = checkpoint_steps(1000, 10)
    assert s[0] == 0 and s[-1] == 1000 and s == sorted(set(s)) and len(s) <= 10
    assert s[-1] - s[-2] > 10 * (s[2] - s[1])
    assert CheckpointSeriesConfig(steps=8, n_checkpoints=6).schedule() == [0, 1, 2, 3, 5, 8]
    with pytest.raises(ValueError, match="total >= 1"):
        checkpoint_steps(0, 5)


def test_lr_warms_up_then_decays_to_zero():
    f = [lr_factor(s, 100) for s in range(101)]
    assert f[0] == pytest.approx(1 / WARMUP * 0.5 * (1 + math.cos(0)))
    assert f[WARMUP - 1] == pytest.approx(0.5 * (1 + math.cos(math.pi * (WARMUP - 1) / 100)))   # warm-up done
    assert all(a <= b for a, b in pairwise(f[:WARMUP]))                      # warm-up rises
    assert all(a >= b for a, b in pairwise(f[WARMUP:]))                      # then cosine falls
    assert f[100] == pytest.approx(0.0, abs=1e-12)


def _states(cfg, **kw):
    got = []

    def cb(step, module, loss):
        got.append((step, loss, {k: v.clone() for k, v in module.state_dict().items()}))
        return step

    return train_checkpoints(cfg, progress=False, on_checkpoint=cb, **kw), got


def test_checkpoints_come_before_their_steps_update_and_runs_repeat_exactly(one_thread):
    cfg = CheckpointSeriesConfig(steps=6, n_checkpoints=4, **TINY)
    ret, got = _states(cfg)
    assert ret == [s for s, _, _ in got] == cfg.schedule() == [0, 1, 2, 6]
    assert got[0][1] is None and all(isinstance(lo, float) for _, lo, _ in got[1:])
    torch.manual_seed(cfg.seed)                            # step 0 is the untrained init
    from transformers import LlamaConfig, LlamaForCausalLM
    init = LlamaForCausalLM(LlamaConfig(vocab_size=got[0][2]["model.embed_tokens.weight"].shape[0], hidden_size=32,
                                        intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1,
                                        eos_token_id=2, pad_token_id=0)).state_dict()
    assert all(torch.equal(init[k], v) for k, v in got[0][2].items())
    assert not torch.equal(got[1][2]["lm_head.weight"], got[0][2]["lm_head.weight"])   # one update at step 1
    _, again = _states(cfg)
    assert [lo for _, lo, _ in again] == [lo for _, lo, _ in got]
    assert all(torch.equal(again[-1][2][k], v) for k, v in got[-1][2].items())


def test_a_callers_module_and_contexts(one_thread):
    cfg = CheckpointSeriesConfig(steps=3, n_checkpoints=2, **TINY)
    from actlab.models import byte_tokenizer
    ctx = cfg.contexts(byte_tokenizer(), extra=2)
    assert ctx.shape[1] == 32 and len(ctx) == 4000 // 32
    lin = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="needs on_checkpoint"):
        train_checkpoints(cfg, progress=False, module=lin)
    with pytest.raises(ValueError, match="need >= 200"):
        cfg.contexts(byte_tokenizer(), extra=196)

    class Bigram(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(260, 260)

        def forward(self, input_ids, labels):
            lo = torch.nn.functional.cross_entropy(self.emb(input_ids[:, :-1]).flatten(0, 1), labels[:, 1:].flatten())
            return type("Out", (), {"loss": lo})()

    m = Bigram()
    losses = train_checkpoints(cfg, progress=False, module=m, contexts=ctx[:8], save_at=[0, 1, 2, 3],
                               on_checkpoint=lambda step, mod, lo: (mod is m, lo))
    assert [a for a, _ in losses] == [True] * 4 and losses[0][1] is None and losses[3][1] < losses[1][1]
