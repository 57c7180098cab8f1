"""The frozen-feature cache: what it stores, and that training on it is training without it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import TINY_HPARAMS
from tunevlseg.data.cache import PreparedSplit
from tunevlseg.features import FeatureCache, build_features, image_rows
from tunevlseg.methods import METHODS
from tunevlseg.models.registry import REGISTRY, load_adapter, supported_methods
from tunevlseg.prompts import build_learner
from tunevlseg.train.augment import PARAM_KEYS, Augment
from tunevlseg.train.loop import TrainSettings, evaluate_test, train_prompts

CACHED_PAIRS = [(model, method) for model in REGISTRY for method in supported_methods(model)
                if METHODS[method].frozen_image_side and METHODS[method].tuned]
CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    """Tiny tensors: intra-op threads only add synchronisation."""


@pytest.fixture(scope="module")
def adapters(tiny_model_dirs):
    return {name: load_adapter(name, str(folder)) for name, folder in tiny_model_dirs.items()}


@pytest.fixture(scope="module")
def shapes(make_prepared):
    """Every image listed twice (one sample per disc): the cache must encode it once."""
    return make_prepared("shapes", n=12, seed=2)


@pytest.fixture(scope="module")
def caches(adapters, tiny_model_dirs, shapes, tmp_path_factory):
    """{(model, dtype, views): folder} built once per module."""
    out = {}

    def get(model, dtype="float32", views=0):
        key = (model, dtype, views)
        if key not in out:
            folder = tmp_path_factory.mktemp(f"features_{model}_{dtype}_{views}") / "cache"
            build_features(adapters[model], shapes, folder, model=model, weights=str(tiny_model_dirs[model]),
                           dtype=dtype, views=views, seed=0, batch_size=5, device="cpu", amp=False)
            out[key] = folder
        return out[key]

    return get


def test_image_rows_deduplicate_identical_pixels():
    a, b = np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 3), np.uint8)
    rows, first = image_rows(np.stack([a, b, a, b, b]))
    assert rows.tolist() == [0, 1, 0, 1, 1] and first.tolist() == [0, 1]


@pytest.mark.parametrize("model", REGISTRY)
def test_cache_holds_the_encoders_features_once_per_image(adapters, caches, shapes, model):
    cache = FeatureCache(caches(model))
    split = PreparedSplit(shapes, "train")
    assert cache.meta["splits"]["train"] == {"samples": len(split), "images": len(split) // 2}
    feats = cache.split("train")
    assert feats.maps[0].shape[:2] == (1, len(split) // 2) and feats.views == 0
    adapter = adapters[model]
    images = torch.from_numpy(np.stack([split.images[i] for i in (0, 1, 7)])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        direct = adapter.encode_image(adapter.normalize(images), None, pooled=True)
    for j, index in enumerate((0, 1, 7)):
        for stored, live in zip(feats.read(index), direct.tensors(), strict=True):
            torch.testing.assert_close(stored, live[j], rtol=1e-5, atol=1e-6)
    assert feats.read(0)[0].dtype == torch.float32 and cache.meta["dtype"] == "float32"


def _trial(adapter, model, method, prepared, folder, features, **training):
    torch.manual_seed(0)
    learner = build_learner(method, adapter.dims, depth=2, **TINY_HPARAMS.get(method, {}))
    settings = TrainSettings.from_dict({"epochs": 2, "batch_size": 6, "progress": False, "amp": False, "lr": 1e-2,
                                        "seed": 1, **training})
    result = train_prompts(adapter, learner, PreparedSplit(prepared, "train"), PreparedSplit(prepared, "val"),
                           settings, folder, CPU, features=features)
    rows = evaluate_test(adapter, learner, PreparedSplit(prepared, "test"), 5, CPU, False,
                         checkpoint=folder / "best.pt", features=None if features is None else features.split("test"))
    return result, rows


@pytest.mark.parametrize("augment", [False, True], ids=["no-augmentation", "augmentation-encoded-live"])
@pytest.mark.parametrize("model,method", CACHED_PAIRS)
def test_training_on_the_cache_is_training_without_it(adapters, caches, shapes, tmp_path, model, method, augment):
    """Same trial, cache on (float32) vs off: identical losses, validation Dice and test metrics (1e-5).
    With augmentation on and no stored views, the samples it changes are encoded live: still identical."""
    adapter = adapters[model]
    plain, plain_rows = _trial(adapter, model, method, shapes, tmp_path / "plain", None, augment=augment)
    cached, cached_rows = _trial(adapter, model, method, shapes, tmp_path / "cached",
                                 FeatureCache(caches(model)), augment=augment)
    for a, b in zip(plain.history, cached.history, strict=True):
        for key in ("train_loss", "val_loss", "val_dice"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
    assert plain.history[0]["train_loss"] != plain.history[1]["train_loss"]  # it trains
    assert [r["id"] for r in plain_rows] == [r["id"] for r in cached_rows]
    for a, b in zip(plain_rows, cached_rows, strict=True):
        assert b["dice"] == pytest.approx(a["dice"], abs=1e-5) and b["iou"] == pytest.approx(a["iou"], abs=1e-5)


@pytest.mark.parametrize("model", REGISTRY)
def test_stored_views_are_the_augmented_images_features(adapters, caches, shapes, model):
    folder = caches(model, views=2)
    feats = FeatureCache(folder).split("train")
    assert feats.views == 2 and feats.maps[0].shape[0] == 3
    assert FeatureCache(folder).split("val").views == 0  # evaluation never augments
    split = PreparedSplit(shapes, "train")
    index = 3
    params = feats.params_of(2, index)
    assert bool(params["affine"]) or bool(params["photometric"])
    assert params["theta"].tolist() == Augment(0).draw_view(2, int(feats.rows[index]))["theta"].tolist()
    image = torch.from_numpy(np.array(split.images[index])).permute(2, 0, 1)[None].float() / 255
    batch = {k: torch.as_tensor(params[k])[None] for k in PARAM_KEYS}
    image, _ = Augment.apply(image, torch.zeros_like(image[:, :1]), batch)
    adapter = adapters[model]
    with torch.no_grad():
        live = adapter.encode_image(adapter.normalize(image), None, pooled=True)
    for stored, fresh in zip(feats.read(index, 2), live.tensors(), strict=True):
        torch.testing.assert_close(stored, fresh[0], rtol=1e-4, atol=1e-5)


def test_training_on_stored_views_runs_no_encoder(adapters, caches, shapes, tmp_path, monkeypatch):
    adapter = adapters["clipseg"]
    calls = {"n": 0}
    real = adapter.encode_image

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(adapter, "encode_image", counting)
    result, _ = _trial(adapter, "clipseg", "coop", shapes, tmp_path / "views", FeatureCache(caches("clipseg", views=2)))
    assert calls["n"] == 0 and len(result.history) == 2
    _trial(adapter, "clipseg", "coop", shapes, tmp_path / "live", FeatureCache(caches("clipseg")))
    assert calls["n"] > 0  # no stored views: changed samples are encoded live


def test_float16_cache_stays_close_to_float32(caches):
    f32 = FeatureCache(caches("clipseg")).split("train")
    f16 = FeatureCache(caches("clipseg", dtype="float16")).split("train")
    for a, b in zip(f32.read(4), f16.read(4), strict=True):
        assert b.dtype == torch.float16
        assert (b.float() - a).abs().max() <= 1e-3 * a.abs().max()


def test_a_cache_of_other_inputs_is_refused(caches, shapes, make_prepared):
    cache = FeatureCache(caches("clipseg"))
    cache.check("clipseg", cache.meta["weights"], shapes)
    with pytest.raises(ValueError, match="model: cache 'clipseg', cell 'cris'"):
        cache.check("cris", cache.meta["weights"], shapes)
    with pytest.raises(ValueError, match="manifest_sha256"):
        cache.check("clipseg", cache.meta["weights"], make_prepared("tissue", n=8, seed=9))


def test_missing_or_old_cache_is_a_clear_error(tmp_path, caches):
    with pytest.raises(FileNotFoundError, match="no feature cache"):
        FeatureCache(tmp_path)
    meta = json.loads((caches("clipseg") / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "version": 0}))
    with pytest.raises(ValueError, match="format version 0"):
        FeatureCache(tmp_path)


def test_vision_prompts_cannot_train_on_cached_features(adapters, caches, shapes, tmp_path):
    with pytest.raises(ValueError, match="prompts the image encoder"):
        _trial(adapters["clipseg"], "clipseg", "vpt", shapes, tmp_path, FeatureCache(caches("clipseg")))


@pytest.mark.parametrize("views", [0, 2])
def test_a_batch_read_is_the_collated_item_reads(caches, shapes, views):
    """SampleSet.__getitems__ (one read per memory map) = default_collate of __getitem__ per sample."""
    from torch.utils.data import default_collate

    from tunevlseg.train.batches import SampleSet

    dataset = SampleSet(PreparedSplit(shapes, "train"), Augment(5), FeatureCache(caches("clipseg", views=views))
                        .split("train"))
    keys = [(i, 3) for i in (4, 0, 9, 4, 13, 2, 7)]
    batch, reference = dataset.__getitems__(keys), default_collate([dataset[k] for k in keys])
    assert set(batch) == set(reference)
    for key in ("image", "mask", "index", "view"):
        assert torch.equal(batch[key], reference[key]), key
    assert batch["prompt"] == reference["prompt"]
    for a, b in zip(batch["features"], reference["features"], strict=True):
        assert torch.equal(a, b)
    for key in PARAM_KEYS:
        assert torch.equal(batch["aug"][key], reference["aug"][key]), key
    assert (batch["view"] > 0).any() == bool(views)
