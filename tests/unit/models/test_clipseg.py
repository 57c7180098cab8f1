"""CLIPSeg prompt-aware forward + CoOp/VPT: parameter counts, gradients, depth semantics, stock equivalence."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import VIT_B16
from tunevlseg.prompts import METHODS, build_learner

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


@pytest.mark.parametrize("method", ["coop", "vpt"])
def test_gradients_reach_exactly_the_learner(tiny_adapter, method):
    learner = build_learner(method, tiny_adapter.dims, depth=2)
    logits = tiny_adapter(_images(), tiny_adapter.tokenize(TEXTS, learner.text_ctx), learner)
    logits.square().mean().backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in tiny_adapter.parameters())


def test_prompts_change_the_output(tiny_adapter):
    images, text = _images(), tiny_adapter.tokenize(TEXTS, 4)
    base = tiny_adapter(images, tiny_adapter.tokenize(TEXTS))
    for method in ("coop", "vpt"):
        learner = build_learner(method, tiny_adapter.dims, depth=1)
        with torch.no_grad():
            out = tiny_adapter(images, text if method == "coop" else tiny_adapter.tokenize(TEXTS), learner)
        assert not torch.allclose(out, base, atol=1e-4), method


def _layer_inputs(layers):
    seen = {}
    hooks = [layer.register_forward_pre_hook(lambda m, args, k=k: seen.__setitem__(k, args[0].detach().clone()))
             for k, layer in enumerate(layers)]
    return seen, hooks


@pytest.mark.parametrize("method,depth", [("coop", 1), ("coop", 2), ("coop", 3), ("vpt", 1), ("vpt", 3)])
def test_depth_d_touches_exactly_layers_1_to_d(tiny_adapter, method, depth):
    """Changing prompt k changes the inputs of layers k+1.. only, and layers > d carry the previous output."""
    learner = build_learner(method, tiny_adapter.dims, depth=depth)
    if method == "coop":
        layers = tiny_adapter.model.clip.text_model.encoder.layers
    else:
        layers = tiny_adapter.model.clip.vision_model.encoder.layers[: tiny_adapter.dims.max_vision_depth]
    images, text = _images(), tiny_adapter.tokenize(TEXTS, learner.text_ctx)

    def run():
        seen, hooks = _layer_inputs(layers)
        with torch.no_grad():
            tiny_adapter(images, text, learner)
        for h in hooks:
            h.remove()
        return seen

    base = run()
    n = learner.n_ctx
    slots = slice(1, 1 + n) if method == "coop" else slice(-n, None)
    for k in range(1, depth):  # replaced slots hold exactly ctx[k] at the input of layer k+1
        torch.testing.assert_close(base[k][:, slots], learner.ctx[k].expand(3, -1, -1))
    for k in range(depth, len(layers)):  # deeper layers see carried outputs, not any learned vector
        assert not any(torch.allclose(base[k][0, slots], c) for c in learner.ctx)
    for k in range(depth):
        original = learner.ctx[k].detach().clone()
        with torch.no_grad():
            learner.ctx[k].add_(1.0)
        changed = run()
        with torch.no_grad():
            learner.ctx[k].copy_(original)
        first = min(j for j in changed if not torch.allclose(changed[j], base[j]))
        assert first == k, f"prompt {k} first changed layer {first}"


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


def test_registry_matches_config_schema():
    import yaml
    from pathlib import Path

    schema = yaml.safe_load((Path(__file__).parents[3] / "workflow/schemas/config.schema.yaml").read_text())
    assert set(schema["properties"]["benchmark"]["properties"]["methods"]["items"]["enum"]) == set(METHODS)
