"""The training loss equals MONAI's DiceCELoss (values and gradients) and is importable without MONAI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from monai.losses import DiceCELoss as MonaiDiceCELoss

from tunevlseg.train.loop import TrainSettings, make_loss
from tunevlseg.train.loss import DiceCELoss


def _case(shape, empty: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(shape, generator=g)).requires_grad_(True)
    masks = torch.zeros(shape) if empty else (torch.rand(shape, generator=g) > 0.7).float()
    return logits, masks


@pytest.mark.parametrize("shape", [(4, 1, 16, 16), (1, 1, 9, 7), (2, 1, 5, 6, 4)])
@pytest.mark.parametrize("empty", [False, True])
@pytest.mark.parametrize("lambdas", [(1.0, 1.0), (0.7, 0.3), (0.0, 1.0), (1.0, 0.0)])
def test_equals_monai_value_and_gradient(shape, empty, lambdas):
    ours, theirs = _case(shape, empty, 0), _case(shape, empty, 0)
    a = DiceCELoss(lambda_dice=lambdas[0], lambda_ce=lambdas[1])(*ours)
    b = MonaiDiceCELoss(sigmoid=True, lambda_dice=lambdas[0], lambda_ce=lambdas[1])(*theirs)
    a.backward()
    b.backward()
    assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-6, abs=1e-7)
    assert torch.allclose(ours[0].grad, theirs[0].grad, rtol=1e-5, atol=1e-8)


def test_known_values():
    """Certain logits on the right mask: loss ≈ 0; on the inverted mask: Dice term ≈ 1, BCE ≈ 20."""
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1
    logits = 20 * (2 * mask - 1)
    loss = DiceCELoss()
    assert float(loss(logits, mask)) < 1e-6
    assert float(loss(-logits, mask)) == pytest.approx(1.0 + 20.0, abs=1e-3)
    assert float(DiceCELoss(lambda_ce=0.0)(-logits, mask)) == pytest.approx(1.0, abs=1e-6)


def test_make_loss_follows_the_settings():
    loss = make_loss(TrainSettings(lambda_dice=0.25, lambda_ce=2.0))
    assert (loss.lambda_dice, loss.lambda_ce) == (0.25, 2.0)


@pytest.mark.parametrize("logits, masks", [((2, 16, 16), (2, 16, 16)), ((2, 2, 8, 8), (2, 2, 8, 8)),
                                           ((2, 1, 8, 8), (2, 1, 4, 4))])
def test_wrong_shapes_are_refused(logits, masks):
    with pytest.raises(ValueError, match=r"\(B, 1, H"):
        DiceCELoss()(torch.zeros(logits), torch.zeros(masks))


def test_training_modules_do_not_import_monai():
    code = ("import sys, tunevlseg.tune, tunevlseg.pretrain, tunevlseg.features, tunevlseg.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'monai'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
