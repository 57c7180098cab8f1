"""The model contract, over every registered (model, method) pair: forward, backward, gradients, depth.

Each registered model's tiny stand-in is saved in its public format and read back through the
registry's loader (the path real weights take). A third model that implements
``tunevlseg.models.base.PromptableModel`` and is registered gets all of these tests.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY_ARCHS, TINY_HPARAMS
from tunevlseg.methods import METHODS
from tunevlseg.models.registry import REGISTRY, load_adapter, supported_methods
from tunevlseg.prompts import build_learner

TEXTS = ["red disc.", "a blue disc", "polyp"]
PAIRS = [(model, method) for model in REGISTRY for method in supported_methods(model)]
PROMPT_PAIRS = [(model, method) for model, method in PAIRS if METHODS[method].modalities]
FROZEN_SIDE_PAIRS = [(model, method) for model, method in PAIRS if METHODS[method].frozen_image_side]


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    """Tiny tensors: intra-op threads only add synchronisation."""


@pytest.fixture(scope="module")
def adapters(tiny_model_dirs):
    return {name: load_adapter(name, str(folder)) for name, folder in tiny_model_dirs.items()}


def _images(model: str, n: int = 3, seed: int = 0) -> torch.Tensor:
    size = TINY_ARCHS[model]["image_size"]
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _learner(adapter, method: str, depth: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    kwargs = dict(TINY_HPARAMS.get(method, {}))
    if METHODS[method].trains_model:
        kwargs["model"] = adapter.model
    if METHODS[method].is_baseline:
        depth = 0
    return build_learner(method, adapter.dims, depth=min(depth, 3), **kwargs)


def _depth_index(name: str) -> int:
    """Per-depth containers (``ctx.1``, ``meta_nets.1.0.weight``, ``layers.0.…``): the first integer is the depth."""
    return int(next(part for part in name.split(".") if part.isdigit()))


@pytest.mark.parametrize("model,method", PAIRS)
def test_forward_gives_logits_at_the_input_size(adapters, tiny_model_dirs, model, method):
    # a method that trains the model makes its weights trainable: it gets its own copy
    adapter = load_adapter(model, str(tiny_model_dirs[model])) if METHODS[method].trains_model else adapters[model]
    learner = _learner(adapter, method)
    images = _images(model)
    with torch.no_grad():
        logits = adapter(images, adapter.tokenize(TEXTS, learner.text_ctx), learner)
    assert logits.shape == (3, 1, *images.shape[-2:])
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("model,method", PROMPT_PAIRS)
def test_gradients_reach_exactly_the_learner(adapters, model, method):
    adapter = adapters[model]
    learner = _learner(adapter, method)
    images, text = _images(model), adapter.tokenize(TEXTS, learner.text_ctx)
    with torch.no_grad():
        plain = adapter(images, adapter.tokenize(TEXTS))
    logits = adapter(images, text, learner)
    assert not torch.allclose(logits, plain, atol=1e-5), "the prompts do not change the output"
    logits.square().mean().backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(not p.requires_grad and p.grad is None for p in adapter.parameters())


@pytest.mark.parametrize("model,method", FROZEN_SIDE_PAIRS)
def test_forward_from_unprompted_image_features_is_the_same_forward(adapters, model, method):
    """Methods without vision prompts leave the image side frozen: its features may be computed once."""
    adapter = adapters[model]
    learner = _learner(adapter, method).eval()
    images, text = _images(model), adapter.tokenize(TEXTS, learner.text_ctx)
    with torch.no_grad():
        direct = adapter(images, text, learner)
        features = adapter.encode_image(adapter.normalize(images), None, pooled=learner.uses_image_feature)
        split = adapter.forward_frozen(features, text, learner)
    assert torch.equal(direct, split)


def _record(layers):
    inputs, outputs, hooks = {}, {}, []
    for k, layer in enumerate(layers):
        hooks.append(layer.register_forward_pre_hook(
            lambda m, args, k=k: inputs.__setitem__(k, args[0].detach().clone())))
        hooks.append(layer.register_forward_hook(
            lambda m, args, out, k=k: outputs.__setitem__(
                k, (out[0] if isinstance(out, tuple) else out).detach().clone())))
    return inputs, outputs, hooks


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("model,method", PROMPT_PAIRS)
def test_depth_d_touches_exactly_layers_1_to_d(adapters, model, method, depth):
    """Prompt k (k >= 1) fills n token slots on the input of layer k+1 and nothing else changes there;
    layers beyond d take the previous layer's output untouched; changing prompt k first changes layer k+1."""
    adapter = adapters[model]
    learner = _learner(adapter, method, depth=depth, seed=depth).eval()
    n = learner.n_ctx
    images, text = _images(model), adapter.tokenize(TEXTS, learner.text_ctx)
    limits = {"text": adapter.dims.max_text_depth, "vision": adapter.dims.max_vision_depth}
    stacks = {mod: adapter.prompt_layers()[mod][: limits[mod]] for mod in learner.modalities}

    def run():
        recorded, hooks = {}, []
        for mod, layers in stacks.items():
            ins, outs, h = _record(layers)
            recorded[mod] = (ins, outs)
            hooks += h
        with torch.no_grad():
            adapter(images, text, learner)
            feature = None
            if learner.uses_image_feature:
                feature = adapter.encode_image(adapter.normalize(images), None, pooled=True).pooled
            prompts = learner(feature)
        for h in hooks:
            h.remove()
        return recorded, prompts

    base, prompts = run()
    for mod, layers in stacks.items():
        ins, outs = base[mod]
        mod_prompts = getattr(prompts, mod)
        assert len(mod_prompts) == depth and len(ins) == len(layers)
        for k in range(1, len(layers)):
            changed = (ins[k] != outs[k - 1]).flatten(2).any(-1).any(0).nonzero().flatten()
            if k < depth:  # exactly n slots replaced, and they hold prompt k
                assert len(changed) == n, (mod, k, changed.tolist())
                torch.testing.assert_close(ins[k][:, changed], mod_prompts[k].expand(3, -1, -1))
            else:  # beyond d: the previous layer's output, untouched
                assert len(changed) == 0, (mod, k)

    named = list(learner.named_parameters())
    for k in range(depth):
        originals = {name: p.detach().clone() for name, p in named if _depth_index(name) == k}
        with torch.no_grad():
            for name, p in named:
                if name in originals:
                    p.add_(1.0)
        changed_run, _ = run()
        with torch.no_grad():
            for name, p in named:
                if name in originals:
                    p.copy_(originals[name])
        for mod in stacks:
            ins, _ = base[mod]
            new_ins, _ = changed_run[mod]
            first = min(j for j in new_ins if not torch.allclose(new_ins[j], ins[j]))
            assert first == k, f"{mod}: prompt {k} first changed layer {first}"


@pytest.mark.parametrize("model", REGISTRY)
def test_saved_stand_in_loads_frozen_with_its_dims(adapters, model):
    adapter = adapters[model]
    assert not any(p.requires_grad for p in adapter.parameters())
    assert not adapter.training
    layers = adapter.prompt_layers()
    assert set(layers) == set(REGISTRY[model].modalities)
    assert len(layers["text"]) == adapter.dims.max_text_depth
    if "vision" in layers:
        assert adapter.dims.max_vision_depth <= len(layers["vision"])
    assert adapter.token_embedding().embedding_dim == adapter.dims.text_width
