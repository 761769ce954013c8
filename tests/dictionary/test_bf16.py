"""bf16 TopK/BatchTopK training (bf16 encoder GEMM + selection, fp32 master weights): fp32 quality, tested."""
from __future__ import annotations

import pytest
import torch

from actlab.dictionary import DictConfig
from actlab.dictionary.precision import native_bf16, select_dtype
from actlab.dictionary.sparse_ops import fused_sparse_dict, topk_selector
from actlab.dictionary.trainer import TrainConfig, Trainer


def _bank(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(512, d, generator=g), dim=1)
    idx = torch.randint(0, 512, (n, 8), generator=g)
    x = torch.nn.functional.embedding_bag(idx, atoms, per_sample_weights=torch.rand(n, 8, generator=g) * 4,
                                          mode="sum")
    return x + 0.1 * torch.randn(n, d, generator=g) + torch.randn(d, generator=g)


DATA = _bank(256 * 100 + 2048, 48, seed=0)


def _train(arch: str, precision: str):
    B, steps = 256, 100

    def source(epoch):
        for i in range(steps):
            yield DATA[i * B:(i + 1) * B]
    tr = Trainer(DictConfig(arch=arch, d_in=48, d_sae=768, k=8),
                 TrainConfig(total_tokens=steps * B, batch_size=B, warmup_steps=5, lr=2e-3, dead_tokens=2560,
                             precision=precision, progress=False, log_every=10), source)
    m = tr.fit()
    held = DATA[-2048:]
    with torch.no_grad():
        fvu = float((held - m(held)).pow(2).sum() / (held - held.mean(0)).pow(2).sum())
    return fvu, tr.history[-1]["dead_frac"], tr.model.select_dtype


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_bf16_training_matches_fp32_quality(arch):
    f32, dead32, dt32 = _train(arch, "fp32")
    f16, dead16, dt16 = _train(arch, "bf16")
    assert dt32 is None and dt16 == torch.bfloat16
    assert f32 < 0.5                                   # it learned something (init FVU is ~0.9)
    assert abs(f16 - f32) / f32 < 0.01, (f16, f32)
    assert abs(dead16 - dead32) <= 0.01, (dead16, dead32)
    assert dead32 > 0                                  # the dead count is exercised (AuxK on)


def test_bf16_selected_values_are_fp32_exact():
    g = torch.Generator().manual_seed(0)
    B, d, n, k = 64, 32, 256, 8
    x = torch.randn(B, d, generator=g)
    W_enc, W_dec = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    b_enc, b_pre, b_dec = torch.randn(n, generator=g) * 0.1, torch.randn(d, generator=g), torch.zeros(d)
    _, v16, i16 = fused_sparse_dict(x, W_enc, b_enc, W_dec, b_pre, b_dec, topk_selector(k), False, torch.bfloat16)
    _, v32, i32 = fused_sparse_dict(x, W_enc, b_enc, W_dec, b_pre, b_dec, topk_selector(k))
    exact = ((x - b_pre) @ W_enc.t() + b_enc).gather(-1, i16).relu()
    assert torch.allclose(v16, exact, atol=1e-5, rtol=1e-5)        # fp32 values, not bf16-rounded ones
    same = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(i16, i32)) / i32.numel()
    assert same > 0.95                                             # bf16 picks (almost) the same latents


def test_precision_choice():
    assert select_dtype("fp32") is None
    assert select_dtype("bf16") == torch.bfloat16
    assert select_dtype("auto") == (torch.bfloat16 if native_bf16("cpu") else None)
    with pytest.raises(ValueError, match="precision"):
        select_dtype("fp8")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(total_tokens=10, batch_size=1, precision="half")
