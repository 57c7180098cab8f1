"""Full-size smoke test: random CLIPSeg rd64-refined at 352 px and random CRIS-R50 at 416 px (the public
architectures, the real CLIP tokenizer), every supported method at depth 3 with the paper preset's settings:
one training step on CPU at batch 1, exact trainable-parameter counts, gradients on exactly the learner."""

from __future__ import annotations

import math

import pytest
import torch

from tunevlseg.methods import METHODS
from tunevlseg.models.base import freeze
from tunevlseg.models.registry import supported_methods
from tunevlseg.prompts import learner_class
from tunevlseg.train.batches import DeviceBatch
from tunevlseg.train.loop import Forwards, TrainSettings, _optimizer, _train_epoch, make_loss
from tunevlseg.tune import CellSpec, make_learner

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("two_torch_threads")]

DEPTH = 3
# Per method at depth 3 with the learners' defaults (the reference configs'): docs/explanation/methods.md formulas.
CLIPSEG_COUNTS = {
    "zeroshot": 0,
    "coop": 2048 * DEPTH,
    "cocoop": (2560 + 1025 * 64) * DEPTH,            # mlp, h = 64
    "vpt": 3072 * DEPTH,
    "maple": (3584 + 1281 * 64) * DEPTH,             # mlp64, reference layout
    "shared_attention": (6_570_240 + 2561 * 1536) * DEPTH,
    "shared_separate": (1284 * 64 + 1280) * DEPTH,   # s = 64
}
CRIS_COUNTS = {"zeroshot": 0, "coop": 2048 * DEPTH, "cocoop": (2560 + 1537 * 64) * DEPTH}
# CLIPSeg: the vision layers after the last one the decoder reads (11, 12), the pooled-image head and CLIP's
# logit scale; CRIS: CLIP's logit scale
UNUSED_BY_THE_MASK = ("vision_model.encoder.layers.10.", "vision_model.encoder.layers.11.", "post_layernorm",
                      "visual_projection", "logit_scale")
# finetune trains every weight; it changes the shared model, so it runs last
ORDER = ["zeroshot", "coop", "cocoop", "vpt", "maple", "shared_attention", "shared_separate", "finetune"]



@pytest.fixture(scope="module")
def clipseg(clip_tokenizer):
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    from tunevlseg.models.clipseg import CLIPSegAdapter

    config = CLIPSegConfig(  # CIDAS/clipseg-rd64-refined's architecture
        text_config=dict(eos_token_id=49407), vision_config=dict(patch_size=16), projection_dim=512,
        extract_layers=[3, 6, 9], reduce_dim=64, decoder_num_attention_heads=4, decoder_intermediate_size=2048,
        conditional_layer=0, use_complex_transposed_convolution=True)
    torch.manual_seed(0)
    adapter = CLIPSegAdapter(CLIPSegForImageSegmentation(config), clip_tokenizer)
    freeze(adapter)
    return adapter, 352


@pytest.fixture(scope="module")
def cris(clip_tokenizer):
    from tunevlseg.models.cris import CRISAdapter
    from tunevlseg.models.cris.model import CRIS, CRISConfig

    torch.manual_seed(0)
    adapter = CRISAdapter(CRIS(CRISConfig.rn50()), clip_tokenizer)
    freeze(adapter)
    return adapter, 416


def _one_step(adapter, size, method, batch_size=1):
    spec = CellSpec(model="m", method=method, dataset="d", weights="w")
    hparams = dict(METHODS[method].fixed)
    learner = make_learner(spec, adapter, DEPTH, hparams) if METHODS[method].tuned else learner_class(method)(adapter.dims)
    if method == "zeroshot":
        with torch.no_grad():
            logits = adapter(torch.rand(1, 3, size, size), adapter.tokenize(["a polyp."]), learner)
        assert logits.shape == (1, 1, size, size) and torch.isfinite(logits).all()
        return learner, {}
    trainable = {name: p for name, p in learner.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in trainable.items()}
    frozen = list(adapter.parameters()) if method != "finetune" else []
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(batch_size, 1, size, size)
    mask[..., size // 4: size // 2, size // 4: size // 2] = 1.0
    batch = DeviceBatch(images=torch.rand(batch_size, 3, size, size, generator=generator), masks=mask,
                        prompts=["a polyp.", "a skin lesion."][:batch_size],  # distinct: BatchNorm of equal rows is flat
                        index=torch.arange(batch_size))
    settings = TrainSettings(lr=1e-3, weight_decay=1e-4, amp=False, progress=False)
    optimizer = _optimizer(learner, settings)  # the trials' AdamW with its weight-decay groups
    loss = _train_epoch(adapter, learner, [batch], make_loss(settings), optimizer, torch.device("cpu"), settings,
                        Forwards(adapter, False))
    assert math.isfinite(loss) and loss > 0
    moved = {name for name, p in trainable.items() if not torch.equal(p.detach(), before[name])}
    if method == "finetune":  # weights the forward never uses get no gradient and keep their values
        used = {name for name in trainable if not any(part in name for part in UNUSED_BY_THE_MASK)}
        assert moved == used, sorted(used ^ moved)[:5]
    else:
        assert moved == set(trainable), sorted(set(trainable) - moved)[:5]
    assert all(p.grad is None for p in frozen)
    return learner, trainable


def _check(adapter, size, method, counts, batch_size=1):
    learner, trainable = _one_step(adapter, size, method, batch_size)
    n = sum(p.numel() for p in trainable.values())
    if method == "finetune":
        assert n == sum(p.numel() for p in adapter.model.parameters()) > 10_000_000
        freeze(adapter)
        adapter.zero_grad(set_to_none=True)  # frees ~0.6 GB of gradients for the tests after
    else:
        assert n == counts[method], (method, n)
        assert learner.depth == (0 if method == "zeroshot" else DEPTH)


@pytest.mark.parametrize("method", [m for m in ORDER if m in supported_methods("clipseg")])
def test_clipseg_rd64_refined_one_step(clipseg, method):
    _check(*clipseg, method, CLIPSEG_COUNTS)


@pytest.mark.parametrize("method", [m for m in ORDER if m in supported_methods("cris")])
def test_cris_r50_one_step(cris, method):
    # fine-tuning trains CRIS's BatchNorm layers too, and BatchNorm1d cannot train on a single sample
    _check(*cris, method, CRIS_COUNTS, batch_size=2 if method == "finetune" else 1)
