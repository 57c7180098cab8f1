"""CLIPSeg prompt-aware forward: CoOp/VPT counts, gradients, depth semantics, stock equivalence, and how vision
prompts reach the decoder (prompts_in_decoder, decoder_sees_next_prompt) for every method with vision prompts."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import VIT_B16
from tunevlseg.methods import METHODS
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


VISION_METHODS = sorted(m for m, info in METHODS.items() if "vision" in info.modalities)
TINY_VISION_HPARAMS = {"maple": dict(coupling="mlp8"), "shared_separate": dict(latent=8),
                       "shared_attention": dict(heads=4, dropout=0.0, ffn=40), "vpt": {}}
GRID_TOKENS = 1 + (32 // 8) ** 2  # class token + the tiny stand-in's 4 × 4 patches


def _decoder_inputs(adapter):
    """Record what each of the decoder's ``reduces`` and token ``layers`` reads, in call order."""
    seen, hooks = {"reduces": [], "layers": []}, []
    for name in seen:
        for module in getattr(adapter.model.decoder, name):
            hooks.append(module.register_forward_pre_hook(lambda m, args, name=name: seen[name].append(args[0].detach().clone())))
    return seen, hooks


def _vision_learner(method, adapter, depth, **options):
    torch.manual_seed(0)
    return build_learner(method, adapter.dims, depth=depth, **TINY_VISION_HPARAMS[method], **options).eval()


@pytest.mark.parametrize("method", VISION_METHODS)
@pytest.mark.parametrize("in_decoder", [False, True])
def test_decoder_input_sequences_with_and_without_prompts(tiny_adapter, method, in_decoder):
    """prompts_in_decoder: the decoder's projections and token layers read 1 + patches + n tokens (the reference);
    otherwise 1 + patches. Every method with vision prompts writes the flag into its Prompts."""
    learner = _vision_learner(method, tiny_adapter, 3, prompts_in_decoder=in_decoder)
    assert learner(None).vision_in_decoder is in_decoder
    seen, hooks = _decoder_inputs(tiny_adapter)
    with torch.no_grad():
        logits = tiny_adapter(_images(), tiny_adapter.tokenize(TEXTS, learner.text_ctx), learner)
    for h in hooks:
        h.remove()
    tokens = GRID_TOKENS + (4 if in_decoder else 0)
    assert [t.shape for t in seen["reduces"]] == [torch.Size([3, tokens, 32])] * 3
    assert [t.shape for t in seen["layers"]] == [torch.Size([3, tokens, 8])] * 3
    assert logits.shape == (3, 1, 32, 32)


def _perturb_output_slots(layer, n=4):
    """Forward hook adding 1 to the last n tokens (the vision prompt slots) of a layer's output."""
    def hook(module, args, out):
        out = out.clone()
        out[:, -n:] += 1.0
        return out
    return layer.register_forward_hook(hook)


@pytest.mark.parametrize("method", VISION_METHODS)
def test_prompt_tokens_reach_the_logits_only_through_the_decoder_when_kept(tiny_adapter, method):
    """The last layer the decoder reads is also the last the encoder runs, so its output's prompt slots reach
    the mask only through the decoder: perturbing them changes the logits with prompts_in_decoder, and changes
    nothing at all without. Inside the decoder, patch tokens attend to the prompt tokens: perturbing the
    prompt rows of the last decoder layer's input changes the patch-grid logits."""
    images = _images()
    last = tiny_adapter.model.clip.vision_model.encoder.layers[max(tiny_adapter.extract_layers)]
    for in_decoder in (True, False):
        learner = _vision_learner(method, tiny_adapter, 2, prompts_in_decoder=in_decoder)
        text = tiny_adapter.tokenize(TEXTS, learner.text_ctx)
        with torch.no_grad():
            base = tiny_adapter(images, text, learner)
            hook = _perturb_output_slots(last)
            moved = tiny_adapter(images, text, learner)
            hook.remove()
        if in_decoder:
            assert (moved - base).abs().max() > 1e-3
        else:
            torch.testing.assert_close(moved, base, atol=0, rtol=0)
    learner = _vision_learner(method, tiny_adapter, 2, prompts_in_decoder=True)
    text = tiny_adapter.tokenize(TEXTS, learner.text_ctx)

    def shift_prompt_rows(module, args):
        x = args[0].clone()
        x[:, -4:] += 1.0
        return (x, *args[1:])

    with torch.no_grad():
        base = tiny_adapter(images, text, learner)
        hook = tiny_adapter.model.decoder.layers[-1].register_forward_pre_hook(shift_prompt_rows)
        moved = tiny_adapter(images, text, learner)
        hook.remove()
    assert (moved - base).abs().max() > 1e-3


@pytest.mark.parametrize("method", VISION_METHODS)
@pytest.mark.parametrize("next_prompt", [False, True])
def test_decoder_sees_next_prompt_at_a_read_layer_below_depth(tiny_adapter, method, next_prompt):
    """Stand-in: the decoder reads layers 1, 2, 3 (extract_layers 0, 1, 2). At depth 3, read layers k = 0, 1 are
    below the depth: with decoder_sees_next_prompt their stored prompt slots are exactly prompt k+1 (what layer
    k+2 reads; the reference's in-place overwrite), else layer k+1's output there. Layer 2 (k + 1 = d) and the
    patch tokens are the layer outputs either way."""
    learner = _vision_learner(method, tiny_adapter, 3, prompts_in_decoder=True, decoder_sees_next_prompt=next_prompt)
    outs, hooks = {}, []
    layers = tiny_adapter.model.clip.vision_model.encoder.layers
    for k in tiny_adapter.extract_layers:
        hooks.append(layers[k].register_forward_hook(lambda m, a, out, k=k: outs.__setitem__(k, out.detach().clone())))
    seen, more = _decoder_inputs(tiny_adapter)
    with torch.no_grad():
        tiny_adapter(_images(), tiny_adapter.tokenize(TEXTS, learner.text_ctx), learner)
        prompts = learner(None).vision
    for h in hooks + more:
        h.remove()
    stored = dict(zip(tiny_adapter.extract_layers[::-1], seen["reduces"]))  # the decoder reads them deepest first
    for k in tiny_adapter.extract_layers:
        torch.testing.assert_close(stored[k][:, :GRID_TOKENS], outs[k][:, :GRID_TOKENS], atol=0, rtol=0)
        if next_prompt and k + 1 < 3:
            torch.testing.assert_close(stored[k][:, GRID_TOKENS:], prompts[k + 1].expand(3, -1, -1), atol=0, rtol=0)
            assert not torch.allclose(stored[k][:, GRID_TOKENS:], outs[k][:, GRID_TOKENS:])
        else:
            torch.testing.assert_close(stored[k][:, GRID_TOKENS:], outs[k][:, GRID_TOKENS:], atol=0, rtol=0)


def test_vision_prompt_flags_do_not_touch_a_prompt_free_forward(tiny_adapter):
    """decode() re-implements the decoder: with no extra tokens it equals the stock decoder's logits."""
    images = _images()
    with torch.no_grad():
        activations = list(tiny_adapter.encode_image(tiny_adapter.normalize(images)).maps)
        conditional = tiny_adapter.encode_text(tiny_adapter.tokenize(TEXTS))
        ours = tiny_adapter.decode_activations(activations, conditional)
        stock = tiny_adapter.model.decoder(activations, conditional).logits
    torch.testing.assert_close(ours[:, 0], stock, atol=1e-6, rtol=0)


def test_text_truncation_keeps_room_for_context(tiny_adapter):
    long_text = " ".join(["red"] * 100)
    batch = tiny_adapter.tokenize([long_text], n_ctx=4)
    assert batch.input_ids.shape[1] + 4 == tiny_adapter.max_text_len
    assert batch.input_ids[0, batch.eot_index[0]] == tiny_adapter.tokenizer.eos_token_id




def test_standin_vision_attention_init_sharpens_attention():
    """``vision_attention_init``: q/k weights N(0, (g / sqrt(width))²), seeded; stock init otherwise.

    With g = 2 the random model's first-layer attention is far from uniform (the stock init's
    logits are ~0.1: uniform attention, so appended vision prompts could only add one offset).
    """
    from tests.conftest import TINY_ARCH, TINY_WORDS
    from tunevlseg.models.standin import build_standin, build_tokenizer

    tokenizer = build_tokenizer(TINY_WORDS)
    width = TINY_ARCH["vision_width"]

    def entropy(model) -> float:
        vm = model.clip.vision_model
        x = vm.pre_layrnorm(vm.embeddings(torch.randn(2, 3, TINY_ARCH["image_size"], TINY_ARCH["image_size"],
                                                     generator=torch.Generator().manual_seed(0))))
        at, h = vm.encoder.layers[0].self_attn, vm.encoder.layers[0].layer_norm1(x)
        heads, d = at.num_heads, width // at.num_heads
        q = at.q_proj(h).view(2, -1, heads, d).transpose(1, 2) * at.scale
        k = at.k_proj(h).view(2, -1, heads, d).transpose(1, 2)
        w = (q @ k.transpose(-1, -2)).softmax(-1)
        return float(-(w * w.clamp_min(1e-12).log()).sum(-1).mean().detach()), x.shape[1]

    torch.manual_seed(0)
    stock = build_standin(TINY_ARCH, tokenizer)
    sharp = build_standin({**TINY_ARCH, "vision_attention_init": 2.0}, tokenizer)
    again = build_standin({**TINY_ARCH, "vision_attention_init": 2.0}, tokenizer)
    q = sharp.clip.vision_model.encoder.layers[1].self_attn.q_proj.weight
    assert float(q.detach().std()) == pytest.approx(2.0 / width**0.5, rel=0.1)
    assert float(stock.clip.vision_model.encoder.layers[1].self_attn.q_proj.weight.detach().std()) < 0.5 * float(q.detach().std())
    assert torch.equal(q, again.clip.vision_model.encoder.layers[1].self_attn.q_proj.weight)
    (h_stock, tokens), (h_sharp, _) = entropy(stock), entropy(sharp)
    uniform = float(torch.log(torch.tensor(float(tokens))))
    assert h_stock > 0.97 * uniform and h_sharp < 0.9 * uniform, (h_stock, h_sharp, uniform)
