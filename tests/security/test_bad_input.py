"""Bad input across the security family: clear errors naming the argument and what was expected."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from actlab.security import (
    ClipConfig,
    DualKeyConfig,
    ImageEncoder,
    attack_success_rate,
    clip_backdoor,
    dualkey_fixture,
    identify_target,
    importances,
    invert_dual,
    patch_trigger,
)


def test_trigger_larger_than_the_image_in_every_fixture(tmp_path):
    with pytest.raises(ValueError, match="trigger size 9 does not fit in a 8x8 image"):
        dualkey_fixture(DualKeyConfig(patch=9), cache=tmp_path)
    with pytest.raises(ValueError, match="trigger size 9 does not fit in a 8x8 image"):
        clip_backdoor(ClipConfig(patch=9), cache=tmp_path)
    assert not any(tmp_path.iterdir())   # refused before training or caching anything


def test_asr_needs_non_target_images_and_importances_need_matching_targets():
    t = patch_trigger((1, 8, 8), 2)
    with pytest.raises(ValueError, match="not the target 0"):
        attack_success_rate(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), torch.zeros(4, 1, 8, 8),
                            torch.zeros(4, dtype=torch.long), t, 0)
    with pytest.raises(ValueError, match="5 inputs but 4 targets"):
        importances(nn.Linear(3, 2), torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))


def test_question_ids_outside_the_vocabulary():
    from actlab.security import DualKeyVQA

    m = DualKeyVQA()
    with pytest.raises(ValueError, match=r"question token ids must be in \[0, 20\)"):
        invert_dual(m, torch.zeros(2, 1, 8, 8), torch.tensor([[10, 1, 2, 25], [11, 0, 1, 2]]), 0)


def test_captions_of_another_width():
    enc = ImageEncoder(d_embed=384)
    with pytest.raises(ValueError, match="caption embeddings have width 768 but the image encoder embeds into 384"):
        identify_target(enc, torch.randn(10, 768), torch.rand(4, 1, 8, 8))
