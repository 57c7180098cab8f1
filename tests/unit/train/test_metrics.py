"""Dice/IoU on hand-made masks, including the empty cases, against MONAI."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_dice, compute_iou

from tunevlseg.train.metrics import dice_iou, logits_to_mask, summarize


def _masks():
    pred = torch.zeros(4, 6, 6, dtype=torch.bool)
    target = torch.zeros(4, 6, 6, dtype=torch.bool)
    pred[0, :2, :3] = True           # 6 px
    target[0, 1:3, :3] = True        # 6 px, overlap 3 → Dice 0.5, IoU 1/3
    pred[1, 0, 0] = True             # prediction on an empty target → 0
    # image 2: both empty → 1
    target[3, 2:4, 2:4] = True       # missed target → 0
    return pred, target


def test_dice_iou_hand_made_values():
    dice, iou = dice_iou(*_masks())
    assert dice.tolist() == [0.5, 0.0, 1.0, 0.0]
    np.testing.assert_allclose(iou.tolist(), [1 / 3, 0.0, 1.0, 0.0])


def test_dice_iou_equal_monai():
    pred, target = _masks()
    ours_dice, ours_iou = dice_iou(pred, target)
    p, t = pred[:, None].float(), target[:, None].float()
    torch.testing.assert_close(ours_dice.float(), compute_dice(p, t, ignore_empty=False)[:, 0])
    torch.testing.assert_close(ours_iou.float(), compute_iou(p, t, ignore_empty=False)[:, 0])


def test_logits_resized_to_original_size_before_threshold():
    logits = torch.full((1, 4, 4), -5.0)
    logits[0, :2, :2] = 5.0
    mask = logits_to_mask(logits, (8, 12))
    assert mask.shape == (8, 12)
    assert mask[:3, :5].all() and not mask[5:, 7:].any()


def test_summarize():
    assert summarize([0.5, 1.0]) == (0.75, 0.25)
    assert all(np.isnan(summarize([])))
