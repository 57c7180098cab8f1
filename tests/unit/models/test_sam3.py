"""SAM 3 adapter: parity with ``Sam3Model``'s own forward, the frozen-feature cache, loading and its errors,
the registry's stand-in defaults. The contract tests (test_contract.py) cover every (sam3, method) pair."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import TINY_ARCHS
from tunevlseg.models.registry import REGISTRY, load_adapter
from tunevlseg.prompts import build_learner
from tunevlseg.prompts.base import Prompts

TEXTS = ["red disc.", "a blue disc", "polyp"]
SIZE = TINY_ARCHS["sam3"]["image_size"]


@pytest.fixture(scope="module")
def sam3(tiny_model_dirs):
    return load_adapter("sam3", str(tiny_model_dirs["sam3"]))


def _images(n=3, size=SIZE, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_zero_shot_logits_equal_sam3_models_own_output(sam3):
    """Our forward (text encoder re-run layer by layer, cached ViT grid, neck in decode) against
    ``Sam3Model(pixel_values, input_ids, attention_mask)`` with the same weights: every output to 1e-5."""
    images, text = _images(), sam3.tokenize(TEXTS)
    pixels = sam3.normalize(images)
    with torch.no_grad():
        ref = sam3.model(pixel_values=pixels, input_ids=text.input_ids, attention_mask=text.attention_mask)
        ours = sam3.outputs(sam3.encode_image(pixels), text, Prompts())
        logits = sam3(images, text)
    for name in ("semantic_seg", "pred_masks", "pred_logits", "presence_logits", "pred_boxes"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), atol=1e-5, rtol=0, msg=name)
    assert text.attention_mask.eq(0).any(), "the batch should contain padding"
    expected = F.interpolate(ref.semantic_seg, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    assert logits.shape == (3, 1, SIZE, SIZE)


def test_cached_features_give_the_uncached_forward(sam3):
    """The frozen-feature cache stores ``encode_image``'s ViT grid and pooled mean; decoding from a stored
    (float32) copy equals the live forward, for CoOp and CoCoOp (which reads the pooled feature)."""
    images = _images(seed=1)
    pixels = sam3.normalize(images)
    with torch.no_grad():
        features = sam3.encode_image(pixels, None, pooled=True)
        vision = sam3.model.get_vision_features(pixel_values=pixels)
        neck = sam3.vision_embeds(features)
    grid = features.maps[0]
    patch = TINY_ARCHS["sam3"]["patch_size"]
    assert grid.shape == (3, TINY_ARCHS["sam3"]["vision_width"], SIZE // patch, SIZE // patch)
    assert features.pooled.shape == (3, sam3.dims.image_feature_dim)
    for ours, ref in zip(neck.fpn_hidden_states, vision.fpn_hidden_states, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    stored = features.to(torch.float16).to(torch.float32)
    for method in ("coop", "cocoop"):
        torch.manual_seed(0)
        learner = build_learner(method, sam3.dims, depth=2, **({"hidden": 8} if method == "cocoop" else {})).eval()
        text = sam3.tokenize(TEXTS, learner.text_ctx)
        with torch.no_grad():
            live = sam3(images, text, learner)
            cached = sam3.forward_frozen(features, text, learner)
            rounded = sam3.forward_frozen(stored, text, learner)
        assert torch.equal(live, cached), method
        assert (rounded - live).abs().max() < 1e-2, method  # the float16 cache's rounding, not a different path


def test_text_prompts_reach_the_detector_through_every_token(sam3):
    """n context tokens lengthen the text the detector reads by n (padding mask grown by n, all ones there)."""
    text = sam3.tokenize(TEXTS, 4)
    prompts = [torch.randn(1, 4, sam3.dims.text_width) for _ in range(2)]
    with torch.no_grad():
        words, pad = sam3.encode_text(text, prompts)
    assert words.shape[:2] == pad.shape == (3, text.input_ids.shape[1] + 4)
    assert pad[:, 1:5].eq(1).all() and torch.equal(pad[:, 5:], text.attention_mask[:, 1:].to(pad.dtype))


def test_bad_inputs_get_one_line_errors(sam3, tiny_model_dirs, tmp_path):
    with pytest.raises(ValueError, match=r"configured for 32x32 \(models.sam3.image_size"):
        sam3(_images(size=40), sam3.tokenize(TEXTS))
    with pytest.raises(NotImplementedError, match="vision prompts are not supported"):
        sam3.encode_image(_images(), Prompts(vision=[torch.zeros(1, 2, 32)]))
    with pytest.raises(ValueError, match="exceed its 32 positions"):
        sam3.encode_text(sam3.tokenize(TEXTS), [torch.zeros(1, 30, sam3.dims.text_width)])
    with pytest.raises(FileNotFoundError, match="gated") as err:
        load_adapter("sam3", str(tmp_path / "missing"))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="not a multiple of the patch size 4"):
        load_adapter("sam3", str(tiny_model_dirs["sam3"]), {"image_size": 30})


def test_folder_reads_back_its_preprocessing_and_resizes(sam3, tiny_model_dirs):
    folder = tiny_model_dirs["sam3"]
    saved = json.loads((folder / "preprocessor_config.json").read_text())
    assert saved["size"] == {"height": SIZE, "width": SIZE} and saved["image_mean"] == [0.5, 0.5, 0.5]
    assert sam3.image_size == SIZE and torch.equal(sam3.std.flatten(), torch.full((3,), 0.5))
    bigger = load_adapter("sam3", str(folder), {"image_size": 48})  # rotary positions of a 12 × 12 grid
    with torch.no_grad():
        logits = bigger(_images(size=48), bigger.tokenize(TEXTS))
    assert logits.shape == (3, 1, 48, 48) and torch.isfinite(logits).all()


def test_public_architecture_is_sam3_configs_default():
    from transformers import Sam3Config

    from tunevlseg.models.sam3 import PUBLIC_ARCH, sam3_config

    ours, public = sam3_config(PUBLIC_ARCH), Sam3Config()
    for part in ("text_config", "geometry_encoder_config", "detr_encoder_config", "detr_decoder_config",
                 "mask_decoder_config"):
        assert getattr(ours, part).to_dict() == getattr(public, part).to_dict(), part
    assert ours.vision_config.backbone_config.to_dict() == public.vision_config.backbone_config.to_dict()
    assert ours.vision_config.fpn_hidden_size == public.vision_config.fpn_hidden_size


def test_weights_standin_alone_gets_the_registry_stand_in():
    from tunevlseg.config import fill_model_defaults, model_size, standin_settings

    config = {"seed": 0, "device": "cpu", "models": {"sam3": {"weights": "standin"},
                                                     "clipseg": {"weights": "x", "image_size": 352}}}
    fill_model_defaults(config)
    standin = REGISTRY["sam3"].standin
    assert config["models"]["sam3"]["standin"] == standin and model_size(config, "sam3") == standin["arch"]["image_size"]
    assert standin_settings(config, "sam3")["arch"] == standin["arch"]
    assert config["models"]["clipseg"] == {"weights": "x", "image_size": 352}
    hub = {"models": {"sam3": {"weights": "facebook/sam3"}}}
    fill_model_defaults(hub)
    assert hub["models"]["sam3"] == {"weights": "facebook/sam3", "image_size": 1008}


def test_registry_stand_in_builds_with_its_parameter_count():
    from tunevlseg.models.registry import build_standin
    from tunevlseg.models.standin import build_tokenizer

    standin = REGISTRY["sam3"].standin
    adapter = build_standin("sam3", standin["arch"], build_tokenizer(standin["vocabulary"], max_length=32))
    assert adapter.training and adapter.model.training  # pretrained end to end
    assert sum(p.numel() for p in adapter.parameters()) == 1_282_974


def test_hub_layout_loads_the_detector(sam3, tiny_model_dirs, tmp_path):
    """``facebook/sam3``'s layout: a ``sam3_video`` config wrapping the detector's, weights under
    ``detector_model.``; the loader reads the detector part and gives the same logits."""
    import shutil

    from safetensors.torch import save_file
    from transformers import Sam3VideoConfig

    folder = tmp_path / "hub_like"
    shutil.copytree(tiny_model_dirs["sam3"], folder)
    (folder / "model.safetensors").unlink()
    save_file({f"detector_model.{k}": v.contiguous() for k, v in sam3.model.state_dict().items()},
              folder / "model.safetensors")
    Sam3VideoConfig(detector_config=sam3.model.config.to_dict()).save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "sam3_video"
    hub = load_adapter("sam3", str(folder))
    images, text = _images(2), sam3.tokenize(TEXTS[:2])
    with torch.no_grad():
        assert torch.equal(hub(images, text), sam3(images, text))
