"""Take the winner home: export a cell's adapter, load it onto its base model, predict masks on new images.

A tiny cell is tuned here (one trial, one epoch) on raw images larger than the model's input, so that
prediction goes through the preparation's resize; its exported adapter must reproduce the cell's
per-image test Dice. Every registered (model, method) pair round-trips export → load with identical logits.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.conftest import TINY_ARCHS, TINY_HPARAMS
from tunevlseg.cells import Layout
from tunevlseg.export import export_cell
from tunevlseg.inference.files import CONFIG_NAME, WEIGHTS_NAME, check_safetensors, read_config
from tunevlseg.methods import METHODS
from tunevlseg.models.registry import REGISTRY, load_adapter as load_base_model, supported_methods
from tunevlseg.predict import predict_files
from tunevlseg.train.checkpoint import save_trainable
from tunevlseg.tune import CellRunner, CellSpec, make_learner

import tunevlseg

PAIRS = [(model, method) for model in REGISTRY for method in supported_methods(model)]
SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "depth": {"type": "int", "low": 1, "high": 2}}


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_thread):
    """Tiny tensors: intra-op threads only add synchronisation."""


@pytest.fixture(scope="module")
def raw_and_prepared(tmp_path_factory):
    """Synthetic tissue images at 48 px, prepared at the tiny CLIPSeg's 32 px (prediction must resize)."""
    from tunevlseg.data.prepare import prepare_dataset
    from tunevlseg.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("export_data")
    write_synthetic("tissue", root / "raw", n=24, image_size=48, seed=5)
    prepare_dataset(root / "raw", root / "prepared", size=32)
    return root / "raw", root / "prepared"


@pytest.fixture(scope="module")
def tuned_cell(tiny_model_dir, raw_and_prepared, tmp_path_factory):
    """A finished one-trial CoOp cell of the tiny CLIPSeg."""
    _, prepared = raw_and_prepared
    out = tmp_path_factory.mktemp("cell") / "cells" / "clipseg" / "coop" / "tissue"
    spec = CellSpec(model="clipseg", method="coop", dataset="tissue", weights=str(tiny_model_dir), n_trials=1,
                    search=SPACE, training={"epochs": 2, "batch_size": 8, "progress": False}, device="cpu")
    CellRunner(spec, prepared, out).run()
    return out


@pytest.fixture(scope="module")
def exported(tuned_cell, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapters") / "clipseg-coop-tissue"
    export_cell(tuned_cell, out)
    return out


def test_export_writes_a_self_describing_safetensors_adapter(exported, tuned_cell, tiny_model_dir):
    assert sorted(p.name for p in exported.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    config = json.loads((exported / CONFIG_NAME).read_text())
    result = json.loads((tuned_cell / "seeds" / "0" / "result.json").read_text())
    recorded = pd.read_csv(tuned_cell / "seeds" / "0" / "test_metrics.csv")
    fingerprint = json.loads((tuned_cell / "fingerprint.json").read_text())
    assert (config["model"], config["method"], config["cell"]["dataset"]) == ("clipseg", "coop", "tissue")
    assert config["depth"] == result["depth"] and config["n_ctx"] == 4
    assert config["base_weights"]["identity"] == fingerprint["components"]["weights"]
    assert set(config["base_weights"]["identity"]["folder"]) >= {"config.json", "model.safetensors"}
    assert config["prompt"] == {"variant": "p1", "phrase": "polyp", "phrases": ["polyp"]}
    assert config["image_size"] == 32 and config["threshold"] == 0.5
    base = load_base_model("clipseg", str(tiny_model_dir))
    assert config["normalization"] == {"mean": base.mean.flatten().tolist(), "std": base.std.flatten().tolist()}
    assert config["cell"]["fingerprint"] == fingerprint["fingerprint"]
    assert config["cell"]["test_dice_mean"] == pytest.approx(recorded["dice"].mean(), abs=1e-12)
    assert config["package_version"] == tunevlseg.__version__
    header = check_safetensors(exported / WEIGHTS_NAME)
    best = torch.load(tuned_cell / "trials" / f"{result['trial']:03d}" / "best.pt", weights_only=True)
    assert {k: v["shape"] for k, v in header.items() if k != "__metadata__"} == \
        {k: list(v.shape) for k, v in best.items()}
    assert (exported / WEIGHTS_NAME).stat().st_size < 4096  # kilobytes: the context vectors only


def _write_test_inputs(raw_and_prepared, folder):
    """The cell's test images (raw files, 48 px) and original masks (0/255 PNG), named by sample id."""
    raw, prepared = raw_and_prepared
    manifest = pd.read_csv(prepared / "manifest.csv")
    test = manifest[manifest["split"] == "test"]
    originals = np.load(prepared / "test_masks_original.npz")
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    for sid, source in zip(test["id"], test["source_image"], strict=True):
        shutil.copy(raw / source, folder / "images" / f"{sid}.png")
        Image.fromarray(originals[sid] * 255).save(folder / "masks" / f"{sid}.png")
    return folder / "images", folder / "masks"


def test_predict_reproduces_the_cells_per_image_test_dice(exported, tuned_cell, raw_and_prepared, tmp_path):
    images, masks = _write_test_inputs(raw_and_prepared, tmp_path)
    mean = predict_files(exported, str(images), tmp_path / "out", masks=masks, device="cpu", progress=False)
    ours = pd.read_csv(tmp_path / "out" / "metrics.csv").set_index("id")
    recorded = pd.read_csv(tuned_cell / "seeds" / "0" / "test_metrics.csv").set_index("id")
    assert sorted(ours.index) == sorted(recorded.index) and len(ours) >= 3
    assert np.abs(ours.loc[recorded.index, "dice"].to_numpy() - recorded["dice"].to_numpy()).max() <= 1e-6
    assert np.abs(ours.loc[recorded.index, "iou"].to_numpy() - recorded["iou"].to_numpy()).max() <= 1e-6
    assert mean == pytest.approx(recorded["dice"].mean(), abs=1e-6)
    first = Image.open(tmp_path / "out" / f"{recorded.index[0]}.png")
    assert first.size == (48, 48) and set(np.unique(np.asarray(first))) <= {0, 255}


@pytest.mark.parametrize("method", ["coop", "cocoop"])
def test_a_cell_tuned_on_the_float16_feature_cache_is_reproduced(method, tiny_model_dir, raw_and_prepared, tmp_path):
    """CoOp / CoCoOp cells train and are tested on cached float16 image features: the adapter records that,
    and prediction rounds the live features the same way, so the per-image test Dice is still the cell's."""
    from tunevlseg.features import build_features

    _, prepared = raw_and_prepared
    build_features(load_base_model("clipseg", str(tiny_model_dir)), prepared, tmp_path / "features",
                   model="clipseg", weights=str(tiny_model_dir), dtype="float16")
    spec = CellSpec(model="clipseg", method=method, dataset="tissue", weights=str(tiny_model_dir), n_trials=1,
                    search=SPACE, fixed=TINY_HPARAMS.get(method, {}), device="cpu",
                    training={"epochs": 2, "batch_size": 8, "progress": False})
    CellRunner(spec, prepared, tmp_path / "cell", tmp_path / "features").run()
    export_cell(tmp_path / "cell", tmp_path / "adapter")
    assert read_config(tmp_path / "adapter")["image_features_dtype"] == "float16"
    from tunevlseg.data.cache import PreparedSplit
    from tunevlseg.features import FeatureCache

    split, cached = PreparedSplit(prepared, "test"), FeatureCache(tmp_path / "features").split("test")
    index = np.arange(len(split))
    adapter = tunevlseg.load_adapter(tmp_path / "adapter", device="cpu")
    text = adapter.model.tokenize(split.prompts, adapter.learner.text_ctx)
    with torch.no_grad():
        expected = adapter.model.forward_frozen(cached.features(cached.read_batch(index, 0 * index), "cpu"), text,
                                                adapter.learner)
    assert torch.equal(adapter.logits(list(split.images), split.prompts), expected)  # the cell's test logits
    adapter.config["image_features_dtype"] = "float32"
    assert not torch.equal(adapter.logits(list(split.images), split.prompts), expected)
    images, masks = _write_test_inputs(raw_and_prepared, tmp_path)
    predict_files(tmp_path / "adapter", str(images), tmp_path / "out", masks=masks, device="cpu", progress=False)
    ours = pd.read_csv(tmp_path / "out" / "metrics.csv").set_index("id")
    recorded = pd.read_csv(tmp_path / "cell" / "seeds" / "0" / "test_metrics.csv").set_index("id")
    assert np.abs(ours.loc[recorded.index, "dice"].to_numpy() - recorded["dice"].to_numpy()).max() <= 1e-6


def test_full_fine_tuning_exports_the_trained_batchnorm_statistics(tiny_model_dirs, raw_and_prepared, tmp_path):
    """CRIS's neck has BatchNorm: fine-tuning changes its running statistics, which best.pt and the adapter keep
    (with the base model's statistics the probabilities differed from the cell's by up to 0.34)."""
    _, prepared = raw_and_prepared
    spec = CellSpec(model="cris", method="finetune", dataset="tissue", weights=str(tiny_model_dirs["cris"]),
                    n_trials=1, search={"lr": {"type": "float", "low": 3e-3, "high": 1e-2, "log": True}},
                    training={"epochs": 3, "batch_size": 8, "progress": False}, device="cpu")
    CellRunner(spec, prepared, tmp_path / "cell").run()
    saved = torch.load(tmp_path / "cell" / "trials" / "000" / "best.pt", weights_only=True)
    assert any(k.endswith("running_mean") for k in saved)
    export_cell(tmp_path / "cell", tmp_path / "adapter")
    examples = np.load(tmp_path / "cell" / "trials" / "000" / "examples.npz")  # the cell's probabilities (float16)
    adapter = tunevlseg.load_adapter(tmp_path / "adapter", device="cpu")
    ours = np.stack(adapter.predict(list(examples["image"]), prompts=list(examples["prompt"])))
    assert np.abs(ours - examples["prob"].astype(np.float32)).max() < 1e-3


def test_python_api_gives_probability_maps_at_each_input_size(exported):
    adapter = tunevlseg.load_adapter(exported, device="cpu")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    maps = adapter.predict([rgb, rgb.astype(np.float32) / 255.0, rgb[..., 0]])
    assert [m.shape for m in maps] == [(40, 56)] * 3
    assert np.array_equal(maps[0], maps[1])  # float in [0, 1] is the same image as its uint8 form
    assert all(((m >= 0) & (m <= 1)).all() for m in maps)
    assert adapter.predict(rgb).shape == (40, 56)
    with pytest.raises(ValueError, match=r"float images must hold values in \[0, 1\]"):
        adapter.predict(rgb.astype(np.float32))


def test_import_tunevlseg_stays_light():
    code = "import sys, tunevlseg; print(sorted(m for m in ('torch', 'optuna', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_other_base_weights_are_refused(exported, tiny_model_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config, indent=4))  # same model, other bytes
    with pytest.raises(ValueError, match="not the ones the adapter was tuned on"):
        tunevlseg.load_adapter(exported, weights=str(other), device="cpu")
    copy = tmp_path / "copy"  # the same files elsewhere are the same weights (hidden files are not weights)
    shutil.copytree(tiny_model_dir, copy)
    (copy / ".snakemake_timestamp").touch()
    assert tunevlseg.load_adapter(exported, weights=str(copy), device="cpu").learner.depth >= 1


def test_pickle_payloads_are_refused(exported, tmp_path):
    with_bin = tmp_path / "with_bin"
    shutil.copytree(exported, with_bin)
    torch.save({"ctx.0": torch.zeros(4, 24)}, with_bin / "adapter_model.bin")
    with pytest.raises(ValueError, match="adapter_model.bin: pickle-capable files are never loaded"):
        tunevlseg.load_adapter(with_bin, device="cpu")

    renamed = tmp_path / "renamed"  # a torch (zip + pickle) file under the safetensors name
    shutil.copytree(exported, renamed)
    torch.save({"ctx.0": torch.zeros(4, 24)}, renamed / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="not a safetensors file"):
        tunevlseg.load_adapter(renamed, device="cpu")

    lying = tmp_path / "lying"  # a header whose byte ranges do not tile the data (trailing payload)
    shutil.copytree(exported, lying)
    with open(lying / WEIGHTS_NAME, "ab") as fh:
        fh.write(b"\x80\x04cos\nsystem\n.")
    with pytest.raises(ValueError, match="header describes"):
        tunevlseg.load_adapter(lying, device="cpu")

    overlap = tmp_path / "overlap"
    shutil.copytree(exported, overlap)
    data = (overlap / WEIGHTS_NAME).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"][0] += 4
    text = json.dumps(header).encode().ljust(length)
    (overlap / WEIGHTS_NAME).write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    with pytest.raises(ValueError, match="lies about"):
        tunevlseg.load_adapter(overlap, device="cpu")


def test_unreadable_inputs_get_a_one_line_error(exported, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"broken.png is unreadable"):
        predict_files(exported, str(tmp_path / "in"), tmp_path / "out", device="cpu", progress=False)
    assert not (tmp_path / "out").exists()  # nothing half-written
    with pytest.raises(FileNotFoundError, match="no images"):
        predict_files(exported, str(tmp_path / "none" / "*.png"), tmp_path / "out", device="cpu", progress=False)


def test_zero_shot_has_nothing_to_export(tiny_model_dir, raw_and_prepared, tmp_path):
    _, prepared = raw_and_prepared
    spec = CellSpec(model="clipseg", method="zeroshot", dataset="tissue", weights=str(tiny_model_dir),
                    training={"batch_size": 8, "progress": False}, device="cpu")
    CellRunner(spec, prepared, tmp_path / "cell").run()
    with pytest.raises(ValueError, match="zeroshot learns nothing"):
        export_cell(tmp_path / "cell", tmp_path / "adapter")


# ------------------------------------------------------------------ every registered (model, method) pair
def _crafted_cell(folder, model: str, method: str, weights: str, prepared) -> tuple:
    """A cell folder as `tune` leaves it (provenance, seed 0's record and metrics, the trial's best.pt),
    with a learner of random tensors; returns (base model, learner) to compare against."""
    hparams = dict(TINY_HPARAMS.get(method, {}))
    spec = CellSpec(model=model, method=method, dataset="tissue", weights=weights, device="cpu")
    base = load_base_model(model, weights)
    torch.manual_seed(1)
    learner = make_learner(spec, base, 0 if METHODS[method].is_baseline else 2, hparams)
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # not the initialisation: the tensors must travel
    save_trainable(learner, folder / "trials" / "000" / "best.pt")
    (folder / "seeds" / "0").mkdir(parents=True)
    (folder / "provenance.json").write_text(json.dumps({"cell": spec.__dict__, "prepared_dir": str(prepared),
                                                        "features": None}))
    (folder / "seeds" / "0" / "result.json").write_text(json.dumps(
        {"trial": 0, "seed": 0, "depth": learner.depth, "val_dice": 0.5,
         "params": {"lr": 1e-3, "depth": learner.depth, **hparams}}))
    pd.DataFrame({"id": ["a"], "dice": [0.5], "iou": [0.33]}).to_csv(folder / "seeds" / "0" / "test_metrics.csv",
                                                                      index=False)
    return base, learner


@pytest.mark.parametrize("model,method", PAIRS)
def test_round_trip_gives_identical_logits(tiny_model_dirs, raw_and_prepared, tmp_path, model, method):
    _, prepared = raw_and_prepared
    cell = Layout(str(tmp_path)).cell(model, method, "tissue").path
    cell.mkdir(parents=True)
    if not METHODS[method].tuned:
        (cell / "provenance.json").write_text(json.dumps({"cell": {"model": model, "method": method,
                                                                   "dataset": "tissue", "weights": "x"}}))
        with pytest.raises(ValueError, match="no adapter to export"):
            export_cell(cell, tmp_path / "adapter")
        return
    base, learner = _crafted_cell(cell, model, method, str(tiny_model_dirs[model]), prepared)
    out = Layout(str(tmp_path)).adapter(model, method, "tissue")
    export_cell(cell, out)
    config = read_config(out)
    assert config["tensors"] == ("model" if METHODS[method].trains_model else "learner")
    loaded = tunevlseg.load_adapter(out, device="cpu")
    size = TINY_ARCHS[model]["image_size"]
    images = [np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8) for i in range(2)]
    prompts = ["red disc.", "polyp."]
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous().float().div(255.0)  # as Batches
    learner.eval()
    with torch.no_grad():
        expected = base(pixels, base.tokenize(prompts, learner.text_ctx), learner)
    got = loaded.logits(images, prompts)
    assert torch.equal(got, expected), (got - expected).abs().max()


# ------------------------------------------------------------------------------------------ volumes
def test_nifti_volumes_are_predicted_slice_by_slice_with_their_affine(tiny_model_dir, tmp_path):
    """A CT cell's adapter on its test volumes: NIfTI out with the input's affine and shape, and at the cell's
    test slices the per-slice Dice of the cell's test metrics."""
    import nibabel as nib

    from tunevlseg.data.prepare import prepare_dataset
    from tunevlseg.data.synthetic import write_synthetic
    from tunevlseg.train.metrics import dice_iou

    write_synthetic("ctvolumes", tmp_path / "raw", n=8, image_size=40, seed=2)
    prepare_dataset(tmp_path / "raw", tmp_path / "prepared", size=32)
    spec = CellSpec(model="clipseg", method="coop", dataset="ct", weights=str(tiny_model_dir), n_trials=1,
                    search=SPACE, training={"epochs": 1, "batch_size": 16, "progress": False}, device="cpu")
    CellRunner(spec, tmp_path / "prepared", tmp_path / "cell").run()
    export_cell(tmp_path / "cell", tmp_path / "adapter")

    manifest = pd.read_csv(tmp_path / "prepared" / "manifest.csv")
    test = manifest[manifest["split"] == "test"]
    for folder, column in (("volumes", "source_image"), ("labels", "source_mask")):
        (tmp_path / folder).mkdir()
        for source in sorted(set(test[column])):  # labels named like their volume: <stem>.nii.gz
            shutil.copy(tmp_path / "raw" / source, tmp_path / folder / source.split("/")[-1].replace("_gt", ""))
    mean = predict_files(tmp_path / "adapter", str(tmp_path / "volumes" / "*.nii.gz"), tmp_path / "out",
                         masks=tmp_path / "labels", label=1, device="cpu", progress=False)
    assert 0.0 <= mean <= 1.0 and len(pd.read_csv(tmp_path / "out" / "metrics.csv")) == len(set(test["source_image"]))

    originals = np.load(tmp_path / "prepared" / "test_masks_original.npz")
    recorded = pd.read_csv(tmp_path / "cell" / "seeds" / "0" / "test_metrics.csv").set_index("id")
    ours = {}
    for sid, source in zip(test["id"], test["source_image"], strict=True):
        name = source.split("/")[-1].removesuffix(".nii.gz")
        source_img, pred_img = nib.load(tmp_path / "raw" / source), nib.load(tmp_path / "out" / f"{name}.nii.gz")
        assert np.array_equal(pred_img.affine, source_img.affine) and pred_img.shape == source_img.shape
        pred = np.asarray(pred_img.dataobj)[..., int(sid.rsplit("_s", 1)[1])]
        dice, _ = dice_iou(torch.from_numpy(pred > 0)[None], torch.from_numpy(originals[sid] > 0)[None])
        ours[sid] = float(dice)
    assert len(ours) >= 3
    assert max(abs(ours[sid] - recorded.loc[sid, "dice"]) for sid in ours) <= 1e-6


def test_cli_export_and_predict(exported, tuned_cell, raw_and_prepared, tmp_path, capsys):
    from tunevlseg.cli import main

    assert main(["export", str(tuned_cell), "--out", str(tmp_path / "adapter")]) == 0
    assert "test Dice" in capsys.readouterr().out
    images, masks = _write_test_inputs(raw_and_prepared, tmp_path)
    assert main(["predict", "--adapter", str(tmp_path / "adapter"), "--input", str(images / "*.png"),
                 "--out", str(tmp_path / "out"), "--masks", str(masks), "--probabilities", "--device", "cpu"]) == 0
    recorded = pd.read_csv(tuned_cell / "seeds" / "0" / "test_metrics.csv")
    assert f"mean Dice {recorded['dice'].mean():.4f}" in capsys.readouterr().out
    assert np.load(tmp_path / "out" / f"{recorded['id'][0]}_prob.npy").shape == (48, 48)
    assert main(["predict", "--adapter", str(tmp_path / "nowhere"), "--input", str(images),
                 "--out", str(tmp_path / "out2")]) == 1
    assert "adapter folder not found" in capsys.readouterr().err
