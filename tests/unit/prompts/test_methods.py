"""CoCoOp, MaPLe, Shared Separate, Shared Attention: parameter counts, gradients, depth semantics, method specifics."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import yaml

from tests.conftest import VIT_B16
from tunevlseg.prompts import build_learner
from tunevlseg.prompts.maple import parse_coupling
from tunevlseg.tune import suggest

TEXTS = ["red disc.", "a blue disc", "polyp"]
N = 4  # n_ctx
NEW_METHODS = ("cocoop", "maple", "shared_separate", "shared_attention")

# The paper's search ranges for the method-specific hyper-parameters, in the config's format.
PAPER_SPACES = yaml.safe_load("""
cocoop:
  hidden: {type: categorical, choices: [32, 64, 128]}
maple:
  coupling: {type: categorical, choices: [linear, mlp32, mlp64, mlp96]}
shared_separate:
  latent: {type: categorical, choices: [32, 64]}
shared_attention:
  heads: {type: categorical, choices: [16, 20, 32]}
  dropout: {type: float, low: 0.1, high: 0.55}
  ffn: {type: categorical, choices: [1280, 1420]}
  norm_first: {type: categorical, choices: [true, false]}
""")


def _images(n=3, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _count(method, depth, **hparams):
    with torch.device("meta"):  # counts are structural: no need to initialise ~100M weights
        learner = build_learner(method, VIT_B16, depth, **hparams)
    return sum(p.numel() for p in learner.parameters())


def _prompt_params(learner):
    return learner.z if hasattr(learner, "z") else learner.ctx


# ------------------------------------------------------------------ parameter counts
def _shared_attention_count(ffn, d=1280):
    return 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * ffn + ffn) + (ffn * d + d) + 4 * d


@pytest.mark.parametrize("depth", [1, 5, 11])
def test_parameter_counts_match_formulas(depth):
    for h in (32, 64, 128):
        assert _count("cocoop", depth, hidden=h) == (2560 + 1025 * h) * depth, h
    assert _count("maple", depth, coupling="linear") == (2048 + 393_984) * depth
    for h in (32, 64, 96):
        assert _count("maple", depth, coupling=f"mlp{h}") == (3584 + 1281 * h) * depth, h
        assert _count("maple", depth, coupling="mlp", hidden=h) == (3584 + 1281 * h) * depth, h
    for s in (32, 64):
        assert _count("shared_separate", depth, latent=s) == (1284 * s + 1280) * depth, s
    for ffn in (1280, 1420):
        for heads in (16, 20, 32):
            count = _count("shared_attention", depth, heads=heads, ffn=ffn, dropout=0.3, norm_first=heads == 20)
            assert count == _shared_attention_count(ffn) * depth, (ffn, heads)


def test_documented_example_counts():
    assert _count("cocoop", 1, hidden=32) == 35_360
    assert _count("shared_separate", 1, latent=64) == 83_456
    assert _shared_attention_count(1280) == 6_570_240 + 2561 * 1280
    cris = VIT_B16.__class__(text_width=1024 // 2, vision_width=None, image_feature_dim=1024, max_text_depth=12,
                             max_vision_depth=0)
    with torch.device("meta"):
        learner = build_learner("cocoop", cris, 1, hidden=64)
    assert sum(p.numel() for p in learner.parameters()) == 2560 + 1537 * 64


def test_depth_is_validated_like_the_base_class():
    for method in NEW_METHODS:
        with pytest.raises(ValueError, match="depth 13 outside 1..12"):
            _count(method, 13)
        with pytest.raises(ValueError, match="depth 0 outside"):
            _count(method, 0)
    no_vision = VIT_B16.__class__(text_width=512, vision_width=None, image_feature_dim=1024, max_text_depth=12,
                                  max_vision_depth=0)
    for method in ("maple", "shared_separate", "shared_attention"):
        with pytest.raises(ValueError):
            build_learner(method, no_vision, 1)


def test_decay_parameters_are_the_2d_weights_never_prompt_vectors():
    expected_per_depth = {("cocoop", ()): 2, ("maple", ("linear",)): 1, ("maple", ("mlp32",)): 2,
                          ("shared_separate", ()): 2, ("shared_attention", ()): 4}
    for (method, coupling), per_depth in expected_per_depth.items():
        kwargs = dict(coupling=coupling[0]) if coupling else {}
        with torch.device("meta"):
            learner = build_learner(method, VIT_B16, 3, **kwargs)
        decay = learner.decay_parameters()
        prompt_ids = {id(p) for p in _prompt_params(learner)}
        assert len(decay) == per_depth * 3, method
        assert all(p.dim() == 2 and id(p) not in prompt_ids for p in decay), method
        named = dict(learner.named_parameters())
        assert {id(p) for n, p in named.items() if n.endswith("weight") and p.dim() == 2} == {id(p) for p in decay}


# ------------------------------------------------------------------ hyper-parameters
def test_maple_coupling_parsing():
    assert parse_coupling("linear") is None
    assert parse_coupling("mlp64") == 64
    assert parse_coupling("mlp", hidden=96) == 96
    assert parse_coupling("mlp32", hidden=32) == 32
    for bad in (dict(coupling="mlp"), dict(coupling="conv"), dict(coupling="linear", hidden=32),
                dict(coupling="mlp32", hidden=64), dict(coupling="mlp0")):
        with pytest.raises(ValueError):
            parse_coupling(**bad)


def test_shared_attention_refuses_heads_not_dividing_width():
    with pytest.raises(ValueError, match="heads=24"):
        _count("shared_attention", 1, heads=24)


def test_paper_search_spaces_validate_and_build():
    """The documented search spaces pass the config schema and every sampled point builds a learner."""
    import jsonschema

    schema = yaml.safe_load((Path(__file__).parents[3] / "workflow/schemas/config.schema.yaml").read_text())
    methods_schema = {"$defs": schema["$defs"], **schema["properties"]["methods"]}
    config = {m: {"search": {"lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True},
                             "depth": {"type": "int", "low": 1, "high": 12}, **space}}
              for m, space in PAPER_SPACES.items()}
    jsonschema.validate(config, methods_schema)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for method, space in PAPER_SPACES.items():
        for _ in range(4):
            params = suggest(study.ask(), space)
            with torch.device("meta"):
                learner = build_learner(method, VIT_B16, 2, init_embeddings=None, **params)
            assert learner.depth == 2


def test_init_embeddings():
    dims = VIT_B16
    init = torch.randn(N, dims.text_width)
    for method in ("cocoop", "maple"):
        learner = build_learner(method, dims, 2, init_embeddings=init, **({"hidden": 32} if method == "cocoop" else {}))
        torch.testing.assert_close(learner.ctx[0].detach(), init)
        assert not torch.allclose(learner.ctx[1].detach(), init)
    for method in ("shared_separate",):  # accepted and ignored
        assert build_learner(method, dims, 1, init_embeddings=init).depth == 1


def test_shared_separate_depths_are_initialised_independently():
    learner = build_learner("shared_separate", VIT_B16, 3, latent=32)
    for projs in (learner.text_proj, learner.vision_proj):
        assert not torch.equal(projs[0].weight, projs[1].weight)
        assert not torch.equal(projs[1].weight, projs[2].weight)


# gradients and depth semantics of every (model, method) pair: tests/unit/models/test_contract.py


# ------------------------------------------------------------------ method specifics
def test_shared_attention_tokens_attend_to_each_other():
    dims = VIT_B16.__class__(text_width=24, vision_width=32, image_feature_dim=16, max_text_depth=3,
                             max_vision_depth=3)
    torch.manual_seed(0)
    learner = build_learner("shared_attention", dims, 2, heads=4, dropout=0.3, ffn=40).eval()
    for k in range(2):
        layer, z = learner.layers[k], learner.z[k]
        with torch.no_grad():
            base = layer(z[None])
            moved = z.clone()
            moved[0] += 1.0
            out = layer(moved[None])
        assert not torch.allclose(out[0, 1:], base[0, 1:]), "other tokens did not see token 0"
        # text and vision prompts are the two halves of that one output
        with torch.no_grad():
            prompts = learner(None)
        torch.testing.assert_close(torch.cat([prompts.text[k], prompts.vision[k]], dim=-1), base)


def test_shared_attention_runs_each_layer_once_for_both_modalities():
    dims = VIT_B16.__class__(text_width=24, vision_width=32, image_feature_dim=16, max_text_depth=3,
                             max_vision_depth=3)
    learner = build_learner("shared_attention", dims, 3, heads=4, dropout=0.5, ffn=40).train()
    calls = []
    for layer in learner.layers:
        layer.register_forward_hook(lambda m, a, out: calls.append(out))
    prompts = learner(None)
    assert len(calls) == 3
    for k, out in enumerate(calls):  # with dropout on, the halves still come from the same draw
        assert torch.equal(torch.cat([prompts.text[k], prompts.vision[k]], dim=-1), out)


def test_cocoop_prompts_are_image_conditioned(tiny_adapter):
    torch.manual_seed(0)
    learner = build_learner("cocoop", tiny_adapter.dims, 2, hidden=8)
    images = torch.cat([_images(1, seed=1), _images(1, seed=2)])
    with torch.no_grad():
        feature = tiny_adapter.encode_image(tiny_adapter.normalize(images), pooled=True).pooled
        prompts = learner(feature)
    assert feature.shape == (2, tiny_adapter.dims.image_feature_dim)
    for k, t in enumerate(prompts.text):
        assert t.shape == (2, N, tiny_adapter.dims.text_width)
        assert not torch.allclose(t[0], t[1]), k
        shift = t - learner.ctx[k].detach()
        torch.testing.assert_close(shift, shift[:, :1].expand_as(shift))  # same shift on all n tokens


def test_cocoop_feature_normalisation():
    dims = VIT_B16.__class__(text_width=24, vision_width=32, image_feature_dim=16, max_text_depth=3,
                             max_vision_depth=3)
    feature = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    normed = build_learner("cocoop", dims, 2, hidden=8)
    torch.manual_seed(0)
    raw = build_learner("cocoop", dims, 2, hidden=8, normalize_feature=False)
    with torch.no_grad():
        for a, b in zip(normed(feature).text, normed(3 * feature).text):
            torch.testing.assert_close(a, b)
        assert any(not torch.allclose(a, b) for a, b in zip(raw(feature).text, raw(3 * feature).text))


def test_cocoop_requires_the_image_feature():
    learner = build_learner("cocoop", VIT_B16, 1, hidden=32)
    assert learner.uses_image_feature
    with pytest.raises(ValueError, match="image feature"):
        learner(None)


