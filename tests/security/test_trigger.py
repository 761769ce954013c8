"""Trigger stamping and the two metrics on constructed cases with known answers."""
from __future__ import annotations

import torch
from torch import nn

from actlab.security import attack_success_rate, clean_accuracy, patch_trigger


class LabelReader(nn.Module):
    """Predicts the class written in pixel (0, 0) (label / 10), or 0 when the bottom-right pixel is lit."""

    def forward(self, x):
        c = (x[:, 0, 0, 0] * 10).round().long()
        c = torch.where(x[:, 0, -1, -1] > 0.99, torch.zeros_like(c), c)
        return nn.functional.one_hot(c, 10).float()


def test_stamp_blends_by_mask():
    t = patch_trigger((1, 8, 8), 2, corner="tl", value=0.25)
    x = torch.full((2, 1, 8, 8), 0.5)
    s = t.stamp(x)
    assert torch.equal(s[:, :, :2, :2], torch.full((2, 1, 2, 2), 0.25))
    assert torch.equal(s[:, :, 2:, :], x[:, :, 2:, :]) and torch.equal(s[:, :, :2, 2:], x[:, :, :2, 2:])
    assert patch_trigger((1, 8, 8), 8).mask.sum() == 64


def test_asr_counts_only_non_target_images():
    y = torch.tensor([0, 0, 0, 1, 2, 3, 4, 5])
    x = torch.zeros(8, 1, 8, 8)
    x[:, 0, 0, 0] = y / 10
    m = LabelReader()
    assert clean_accuracy(m, x, y).value == 1.0
    br = patch_trigger((1, 8, 8), 1)            # lights the bottom-right pixel: every stamped image -> class 0
    assert attack_success_rate(m, x, y, br, 0).value == 1.0
    tl = patch_trigger((1, 8, 8), 1, corner="tr")   # does nothing to the reader
    assert attack_success_rate(m, x, y, tl, 0).value == 0.0   # counting the 3 target images would give 3/8
