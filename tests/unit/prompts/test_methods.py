"""CoCoOp, MaPLe, Shared Separate, Shared Attention: parameter counts, gradients, depth semantics, method specifics."""

from __future__ import annotations


import optuna
import pytest
import torch

from tests.conftest import VIT_B16
from tunevlseg.methods import METHODS, catalogue_settings
from tunevlseg.prompts import build_learner
from tunevlseg.prompts.projections import parse_projection
from tunevlseg.tune import suggest

TEXTS = ["red disc.", "a blue disc", "polyp"]
N = 4  # n_ctx
NEW_METHODS = ("cocoop", "maple", "shared_separate", "shared_attention")


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
        for init in ("default", "kaiming"):
            assert _count("cocoop", depth, hidden=h, first_layer_init=init) == (2560 + 1025 * h) * depth, h
        assert _count("cocoop", depth, hidden=h, projection="lora") == (2560 + 1024 * h) * depth, h
    assert _count("maple", depth, coupling="linear") == (2048 + 393_984) * depth
    for h in (32, 64, 96):
        for layout in ("ours", "reference"):
            assert _count("maple", depth, coupling=f"mlp{h}", coupling_layout=layout) == (3584 + 1281 * h) * depth
        assert _count("maple", depth, coupling="mlp", hidden=h) == (3584 + 1281 * h) * depth, h
        assert _count("maple", depth, coupling=f"lora{h}") == (3584 + 1280 * h) * depth, h
        assert _count("maple", depth, coupling="lora", hidden=h) == (3584 + 1280 * h) * depth, h
    for s in (32, 64):
        for depth_init in ("independent", "copied"):
            assert _count("shared_separate", depth, latent=s, depth_init=depth_init) == (1284 * s + 1280) * depth, s
    for ffn in (1280, 1420, 1536):
        for heads in (16, 20, 32):
            count = _count("shared_attention", depth, heads=heads, ffn=ffn, dropout=0.3, norm_first=heads == 20,
                           batch_first=heads != 32)
            assert count == _shared_attention_count(ffn) * depth, (ffn, heads)


def test_defaults_are_the_reference_configs():
    """Plain hyper-parameter defaults follow the reference's model configs (CoCoOp h 64, MaPLe mlp64,
    Shared Attention 16 heads / dropout 0.25 / FFN 1536 / pre-norm, Shared Separate s 64)."""
    with torch.device("meta"):
        cocoop, maple = build_learner("cocoop", VIT_B16, 1), build_learner("maple", VIT_B16, 1)
        attention, separate = build_learner("shared_attention", VIT_B16, 1), build_learner("shared_separate", VIT_B16, 1)
    assert (cocoop.hidden, cocoop.projection, maple.coupling) == (64, "mlp", "mlp64")
    layer = attention.layers[0]
    assert (layer.self_attn.num_heads, layer.linear1.out_features, layer.dropout.p, layer.norm_first) == (16, 1536, 0.25, True)
    assert separate.latent == 64


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
    expected_per_depth = {("cocoop", ()): 2, ("cocoop", (("projection", "lora"),)): 2,
                          ("maple", (("coupling", "linear"),)): 1, ("maple", (("coupling", "mlp32"),)): 2,
                          ("maple", (("coupling", "lora32"),)): 2, ("shared_separate", ()): 2, ("shared_attention", ()): 4}
    for (method, options), per_depth in expected_per_depth.items():
        kwargs = dict(options)
        with torch.device("meta"):
            learner = build_learner(method, VIT_B16, 3, **kwargs)
        decay = learner.decay_parameters()
        prompt_ids = {id(p) for p in _prompt_params(learner)}
        assert len(decay) == per_depth * 3, method
        assert all(p.dim() == 2 and id(p) not in prompt_ids for p in decay), method
        named = dict(learner.named_parameters())
        assert {id(p) for n, p in named.items() if n.endswith("weight") and p.dim() == 2} == {id(p) for p in decay}


# ------------------------------------------------------------------ hyper-parameters
def test_projection_parsing():
    assert parse_projection("linear") == ("linear", None)
    assert parse_projection("mlp64") == ("mlp", 64)
    assert parse_projection("LoRA32") == ("lora", 32)
    assert parse_projection("mlp", hidden=96) == ("mlp", 96)
    assert parse_projection("lora", hidden=64) == ("lora", 64)
    assert parse_projection("mlp32", hidden=32) == ("mlp", 32)
    for bad in (dict(name="mlp"), dict(name="conv"), dict(name="linear", hidden=32), dict(name="linear32"),
                dict(name="mlp32", hidden=64), dict(name="mlp0"), dict(name="lora")):
        with pytest.raises(ValueError):
            parse_projection(**bad)
    for bad in (dict(coupling_layout="theirs"), dict(first_layer_init="xavier")):
        with pytest.raises(ValueError, match="theirs|xavier"):
            _count("maple", 1, coupling="mlp32", **bad)
    with pytest.raises(ValueError, match="'conv'"):
        _count("cocoop", 1, projection="conv")
    with pytest.raises(ValueError, match="'shared'"):
        _count("shared_separate", 1, depth_init="shared")


def _structure(net):
    return [(type(m).__name__, tuple(m.weight.shape) if hasattr(m, "weight") else None,
             getattr(m, "bias", None) is not None) for m in net]


def test_coupling_and_meta_net_forms():
    """The exact layer sequence of each projection: which layers, which shapes, where the biases are."""
    with torch.device("meta"):
        ours = build_learner("maple", VIT_B16, 1, coupling="mlp64").couple[0]
        ref = build_learner("maple", VIT_B16, 1, coupling="mlp64", coupling_layout="reference").couple[0]
        lora = build_learner("maple", VIT_B16, 1, coupling="lora32", coupling_layout="reference").couple[0]
        meta = build_learner("cocoop", VIT_B16, 1, hidden=32).meta_nets[0]
        meta_lora = build_learner("cocoop", VIT_B16, 1, hidden=32, projection="lora").meta_nets[0]
    assert _structure(ours) == [("Linear", (64, 512), True), ("ReLU", None, False), ("Linear", (768, 64), True),
                                ("LayerNorm", (768,), False)]
    assert _structure(ref) == [("Linear", (64, 512), True), ("ReLU", None, False), ("Linear", (768, 64), False),
                               ("LayerNorm", (768,), True)]
    assert _structure(lora) == [("Linear", (32, 512), False), ("Linear", (768, 32), False), ("LayerNorm", (768,), True)]
    assert _structure(meta) == [("Linear", (32, 512), True), ("ReLU", None, False), ("Linear", (512, 32), False),
                                ("LayerNorm", (512,), False)]
    assert _structure(meta_lora) == [("Linear", (32, 512), False), ("Linear", (512, 32), False),
                                     ("LayerNorm", (512,), False)]
    with torch.device("meta"):  # the reference collapses a LoRA wider than its output to one Linear
        wide = build_learner("maple", VIT_B16, 1, coupling="lora1000").couple[0]
    assert _structure(wide) == [("Linear", (768, 512), False), ("LayerNorm", (768,), True)]


@pytest.mark.parametrize("method,kwargs", [("maple", dict(coupling="mlp96")), ("cocoop", dict(hidden=96))])
def test_kaiming_first_layer_init(method, kwargs):
    """kaiming: first-layer weights ~ N(0, 2/fan_in) (std 0.0625 at fan-in 512); default: PyTorch's
    U(±1/sqrt(fan_in)) (std 0.0255); the rest of the net is untouched."""
    torch.manual_seed(0)
    default = build_learner(method, VIT_B16, 2, **kwargs)
    torch.manual_seed(0)
    kaiming = build_learner(method, VIT_B16, 2, first_layer_init="kaiming", **kwargs)
    nets = (lambda learner: learner.couple) if method == "maple" else (lambda learner: learner.meta_nets)
    for a, b in zip(nets(default), nets(kaiming)):
        assert abs(b[0].weight.std().item() - (2 / 512) ** 0.5) < 0.003
        assert abs(a[0].weight.std().item() - (1 / (3 * 512)) ** 0.5) < 0.002
        assert b[0].weight.abs().max() > 1 / 512 ** 0.5  # a normal draw leaves the uniform's bounds
        assert b[2].weight.shape == a[2].weight.shape


def test_shared_attention_refuses_heads_not_dividing_width():
    with pytest.raises(ValueError, match="heads=24"):
        _count("shared_attention", 1, heads=24)


@pytest.mark.parametrize("method", ["cocoop", "maple", "shared_separate", "shared_attention", "vpt"])
def test_paper_settings_build_for_every_sampled_point(method):
    """Every point of the paper's search space, with its fixed reference options, builds a learner."""
    settings = catalogue_settings(method)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {k: v for k, v in settings["search"].items() if k not in ("lr", "weight_decay", "depth")}
    for _ in range(8):
        params = {**settings.get("fixed", {}), **suggest(study.ask(), space)}
        with torch.device("meta"):
            assert build_learner(method, VIT_B16, 2, init_embeddings=None, **params).depth == 2
    for name, spec in space.items():  # and every choice of each categorical
        for choice in spec.get("choices", []):
            with torch.device("meta"):
                learner = build_learner(method, VIT_B16, 2, **{**params, name: choice})
            assert getattr(learner, name) == choice, (name, choice)


def test_paper_settings_hold_the_reference_semantics():
    vision = [m for m, info in METHODS.items() if "vision" in info.modalities]
    assert sorted(vision) == ["maple", "shared_attention", "shared_separate", "vpt"]
    for method in vision:
        fixed = METHODS[method].fixed
        assert fixed["prompts_in_decoder"] is True and fixed["decoder_sees_next_prompt"] is True, method
    assert METHODS["maple"].fixed["coupling_layout"] == "reference"
    assert METHODS["cocoop"].fixed["normalize_feature"] is False
    assert METHODS["shared_attention"].fixed["batch_first"] is False


def test_init_embeddings():
    dims = VIT_B16
    init = torch.randn(N, dims.text_width)
    for method in ("coop", "cocoop", "maple"):
        learner = build_learner(method, dims, 2, init_embeddings=init)
        torch.testing.assert_close(learner.ctx[0].detach(), init)
        assert not torch.allclose(learner.ctx[1].detach(), init)
        off = build_learner(method, dims, 2, init_embeddings=init, init_from_text=False)
        assert not torch.allclose(off.ctx[0].detach(), init) and off.ctx[0].std() < 0.03
    for method in ("shared_separate", "shared_attention"):  # accepted and ignored
        assert build_learner(method, dims, 1, init_embeddings=init).depth == 1


@pytest.mark.parametrize("method,modules", [("shared_separate", ("text_proj", "vision_proj")),
                                            ("shared_attention", ("layers",))])
def test_depth_init_independent_or_copied(method, modules):
    """independent: each depth's projections differ from the start; copied (the reference's deepcopy):
    equal at the start, separate parameters (a step on one leaves the others)."""
    small = VIT_B16.__class__(text_width=24, vision_width=32, image_feature_dim=16, max_text_depth=3, max_vision_depth=3)
    kwargs = dict(heads=4, ffn=40) if method == "shared_attention" else dict(latent=8)
    fresh = build_learner(method, small, 3, **kwargs)
    copied = build_learner(method, small, 3, depth_init="copied", **kwargs)
    for name in modules:
        a = [dict(m.named_parameters()) for m in getattr(fresh, name)]
        b = [dict(m.named_parameters()) for m in getattr(copied, name)]
        weights = [k for k in a[0] if k.endswith("weight") and a[0][k].dim() == 2]
        for k in weights:
            assert not torch.equal(a[0][k], a[1][k]) and not torch.equal(a[1][k], a[2][k]), (name, k)
        for k in a[0]:
            assert torch.equal(b[0][k], b[1][k]) and torch.equal(b[0][k], b[2][k]), (name, k)
            assert b[0][k] is not b[1][k]
    zs = copied.z
    assert not torch.equal(zs[0], zs[1])  # the prompt latents are drawn per depth in both schemes


def test_shared_separate_depths_are_initialised_independently():
    learner = build_learner("shared_separate", VIT_B16, 3, latent=32)
    for projs in (learner.text_proj, learner.vision_proj):
        assert not torch.equal(projs[0].weight, projs[1].weight)
        assert not torch.equal(projs[1].weight, projs[2].weight)


# ------------------------------------------------------------------ gradients
# Every (model, method) pair at its default options: tests/unit/models/test_contract.py. Here: the option
# variants that change the parameter structure.
@pytest.mark.parametrize("method,options", [
    ("cocoop", dict(hidden=8, projection="lora")), ("cocoop", dict(hidden=8, first_layer_init="kaiming")),
    ("maple", dict(coupling="linear")), ("maple", dict(coupling="lora8")),
    ("maple", dict(coupling="mlp8", coupling_layout="reference")),
    ("shared_attention", dict(heads=4, ffn=40, dropout=0.0, batch_first=False, depth_init="copied")),
    ("shared_separate", dict(latent=8, depth_init="copied")),
])
def test_every_option_variant_trains_all_its_parameters(tiny_adapter, method, options):
    torch.manual_seed(0)
    learner = build_learner(method, tiny_adapter.dims, depth=2, **options)
    logits = tiny_adapter(_images(), tiny_adapter.tokenize(TEXTS, learner.text_ctx), learner)
    logits.square().mean().backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in tiny_adapter.parameters())


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


def test_shared_attention_batch_first_false_tokens_attend_only_to_themselves():
    """The reference's batch_first=False reads (1, n, D) as n sequences of one token: moving token 0 leaves the
    other tokens' outputs exactly as they were, and each token's output is the layer applied to it alone."""
    dims = VIT_B16.__class__(text_width=24, vision_width=32, image_feature_dim=16, max_text_depth=3,
                             max_vision_depth=3)
    torch.manual_seed(0)
    learner = build_learner("shared_attention", dims, 2, heads=4, dropout=0.3, ffn=40, batch_first=False).eval()
    for k in range(2):
        layer, z = learner.layers[k], learner.z[k]
        with torch.no_grad():
            base = layer(z[None])
            moved = z.clone()
            moved[0] += 1.0
            out = layer(moved[None])
            alone = torch.cat([layer(z[i][None, None]) for i in range(N)], dim=1)
        assert not torch.allclose(out[0, 0], base[0, 0])
        torch.testing.assert_close(out[0, 1:], base[0, 1:], atol=1e-6, rtol=0)
        torch.testing.assert_close(alone, base, atol=1e-6, rtol=0)


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


