"""CLIPSeg prompt-aware forward + CoOp/VPT: parameter counts, gradients, depth semantics, stock equivalence."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import VIT_B16
from tunevlseg.prompts import build_learner

TEXTS = ["red disc.", "a blue disc", "polyp"]


def _images(n=3, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("depth", [1, 5, 11])
def test_parameter_counts_match_formulas(depth):
    assert sum(p.numel() for p in build_learner("coop", VIT_B16, depth).parameters()) == 2048 * depth
    assert sum(p.numel() for p in build_learner("vpt", VIT_B16, depth).parameters()) == 3072 * depth
    assert sum(p.numel() for p in build_learner("zeroshot", VIT_B16, 0).parameters()) == 0


def test_depth_outside_model_range_is_refused():
    with pytest.raises(ValueError, match="depth 13 outside 1..12"):
        build_learner("coop", VIT_B16, 13)
    with pytest.raises(KeyError, match=r"known: .*\bcoop\b"):
        build_learner("nope", VIT_B16, 1)


def test_adapter_without_prompts_reproduces_stock_logits(tiny_adapter):
    images = _images()
    enc = tiny_adapter.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = tiny_adapter(images, tiny_adapter.tokenize(TEXTS))
        stock = tiny_adapter.model(pixel_values=tiny_adapter.normalize(images), input_ids=enc["input_ids"],
                                   attention_mask=enc["attention_mask"]).logits
    assert ours.shape == (3, 1, 32, 32)
    torch.testing.assert_close(ours[:, 0], stock, atol=1e-5, rtol=0)


def test_vision_prompts_never_reach_the_decoder(tiny_adapter):
    learner = build_learner("vpt", tiny_adapter.dims, depth=3)
    captured = {}
    hook = tiny_adapter.model.decoder.register_forward_pre_hook(
        lambda m, args: captured.update(acts=[a.shape for a in args[0]]))
    with torch.no_grad():
        tiny_adapter(_images(), tiny_adapter.tokenize(TEXTS), learner)
    hook.remove()
    grid_tokens = 1 + (32 // 8) ** 2
    assert captured["acts"] == [torch.Size([3, grid_tokens, 32])] * 3


def test_text_truncation_keeps_room_for_context(tiny_adapter):
    long_text = " ".join(["red"] * 100)
    batch = tiny_adapter.tokenize([long_text], n_ctx=4)
    assert batch.input_ids.shape[1] + 4 == tiny_adapter.max_text_len
    assert batch.input_ids[0, batch.eot_index[0]] == tiny_adapter.tokenizer.eos_token_id


