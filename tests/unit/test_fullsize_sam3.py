"""Full-size smoke test of SAM 3: a random ``facebook/sam3`` architecture (``PUBLIC_ARCH``: ViT 32 × 1024, CLIP
text 24 × 1024, DETR 6 × 256, 200 queries) with the real CLIP tokenizer, every supported prompt method at depth 3:
one training step on CPU at batch 1, exact trainable-parameter counts, gradients on exactly the learner.

The input is 336 px (a 24 × 24 grid: one attention window) instead of the processor's 1008 to keep the CPU
step short: the parameters do not depend on the input size (the ViT's position table is the 336 px
pretraining one, tiled). Fine-tuning is not stepped here (AdamW state for 840 M weights is ~10 GB): its
trainable count is the model's, asserted below; the contract tests step it on the tiny stand-in."""

from __future__ import annotations

import pytest

from tests.unit.test_fullsize import DEPTH, _check
from tunevlseg.models.base import freeze

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("two_torch_threads")]

SIZE = 336
# README "Methods" formulas with SAM 3's widths (text 1024, image feature = ViT width 1024), depth 3
SAM3_COUNTS = {
    "zeroshot": 0,
    "coop": 4 * 1024 * DEPTH,
    "cocoop": (5120 + 2049 * 64) * DEPTH,  # mlp, h = 64
}
# Sam3Model() with the default Sam3Config (facebook/sam3's architecture), counted once
SAM3_PARAMETERS = 840_376_374



@pytest.fixture(scope="module")
def sam3(clip_tokenizer):
    from tunevlseg.models.sam3 import PUBLIC_ARCH, Sam3Adapter, build_sam3

    adapter = Sam3Adapter(build_sam3({**PUBLIC_ARCH, "image_size": SIZE}, seed=0), clip_tokenizer, {"size": SIZE})
    freeze(adapter)
    return adapter, SIZE


def test_sam3_has_the_public_parameter_count(sam3):
    adapter, _ = sam3
    assert sum(p.numel() for p in adapter.model.parameters()) == SAM3_PARAMETERS  # = finetune's trainable count
    assert adapter.dims.text_width == 1024 and adapter.dims.max_text_depth == 24 and adapter.dims.max_vision_depth == 0


@pytest.mark.parametrize("method", ["zeroshot", "coop", "cocoop"])
def test_sam3_one_step(sam3, method):
    _check(*sam3, method, SAM3_COUNTS)
