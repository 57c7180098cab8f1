"""Checked before any job: datasets' files and masks, weights paths, the device (tunevlseg data check)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.local_fixtures import build_folder, build_nnunet_3d
from tunevlseg import config as cfg
from tunevlseg.cli import main
from tunevlseg.data.check import check_config_data, device_problem, start_problems, weights_problems

REPO = Path(__file__).resolve().parents[3]
DEMO = yaml.safe_load((REPO / "config.yaml").read_text())
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _config(**datasets) -> dict:
    config = copy.deepcopy(DEMO)
    config["datasets"].update(datasets)
    return config


def test_device_cuda_without_cuda_is_one_line_naming_the_key():
    assert device_problem("auto", "c.yaml", has_cuda=0) is None and device_problem("cpu", "c.yaml", 0) is None
    assert device_problem("cuda", "c.yaml", has_cuda=0) == (
        "c.yaml: device: 'cuda' requested but this machine has no CUDA device; use device: auto (CUDA when "
        "available, else CPU) or cpu")
    assert device_problem("cuda:1", "c.yaml", has_cuda=1).startswith(
        "c.yaml: device: 'cuda:1' requested but this machine has 1 CUDA device(s) (cuda:0..cuda:0)")
    assert device_problem("cuda:1", "c.yaml", has_cuda=2) is None


def test_weights_paths_must_exist(tmp_path):
    config = _config()
    assert weights_problems(config, "c.yaml") == []  # standin
    config["models"]["clipseg"]["weights"] = "CIDAS/clipseg-rd64-refined"  # a hub name: fetched by the job
    config["models"]["cris"]["weights"] = str(tmp_path / "cris_best.pth")
    assert weights_problems(config, "c.yaml") == [
        f"c.yaml: models.cris.weights: {tmp_path / 'cris_best.pth'} does not exist (a local folder or checkpoint "
        f"file, a hub name org/name, or standin)"]
    (tmp_path / "cris_best.pth").write_bytes(b"x")
    assert weights_problems(config, "c.yaml") == []


def test_start_checks_pairing_without_decoding(tmp_path):
    fcfg, _ = build_folder(tmp_path / "polyps", layout="jpeg")
    config = _config(mypolyps=fcfg)
    assert start_problems(config, "c.yaml", device=False) == []
    (tmp_path / "polyps" / "masks" / "img003.jpg").unlink()
    assert start_problems(config, "c.yaml", device=False) == [
        f"c.yaml: datasets.mypolyps: image {tmp_path}/polyps/images/img003.jpg has no mask "
        f"{tmp_path}/polyps/masks/img003.* (looked for .png, .jpg, .jpeg, .tif, .tiff, .bmp; mask_pattern '{{stem}}')"]
    config["datasets"]["mypolyps"]["masks"] = str(tmp_path / "nomasks")
    assert start_problems(config, "c.yaml", device=False) == [
        f"c.yaml: datasets.mypolyps.masks: folder {tmp_path}/nomasks does not exist"]


def test_data_check_decodes_masks_and_sizes(tmp_path, capsys):
    fcfg, _ = build_folder(tmp_path / "polyps", layout="mixed", n=6)
    vcfg, _ = build_nnunet_3d(tmp_path / "Dataset017_Liver", n=4)
    config = _config(mypolyps=fcfg, myct=vcfg)
    lines, problems = check_config_data(config, "c.yaml", device=False)
    assert problems == []
    assert "mypolyps (folder): OK, 6 samples, 6 images, 6 groups" in lines
    assert "myct (nnunet): OK, 4 samples, 4 images, 2 groups" in lines
    # a grey mask (not binary under rule binary) and a mask of another size
    from PIL import Image

    Image.new("L", (40, 32), 128).save(tmp_path / "polyps" / "masks" / "frame001.png")
    Image.new("L", (20, 20), 0).save(tmp_path / "polyps" / "masks" / "frame002.png")
    _, problems = check_config_data(config, "c.yaml", device=False)
    assert problems == [
        f"c.yaml: datasets.mypolyps (frame001): mask {tmp_path}/polyps/masks/frame001.png is not binary: values "
        f"[128] (expected {{0,255}} or {{0,1}})",
        f"c.yaml: datasets.mypolyps (frame002): size mismatch: mask {tmp_path}/polyps/masks/frame002.png is 20x20 "
        f"but its image is 40x32"]

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["data", "check", "--configfile", str(tmp_path / "c.yaml"), "--no-device"]) == 1
    out = capsys.readouterr()
    assert "mypolyps (folder): 2 problem(s)" in out.out
    assert "ERROR c.yaml" not in out.err and "ERROR " + str(tmp_path / "c.yaml") in out.err
    assert "2 problem(s) in" in out.err and "nothing was run" in out.err


@pytest.mark.parametrize("entry,key,words", [
    ({"source": "folder", "images": "/x"}, "datasets.mine", ["'masks' is a required property"]),
    ({"source": "nnunet"}, "datasets.mine", ["'path' is a required property"]),
    ({"source": "folder", "images": "a", "masks": "b", "phrase": "p", "mask_rule": "thresh:5"},
     "datasets.mine.mask_rule", ["does not match"]),
    ({"source": "nnunet", "path": "p", "axis": 3}, "datasets.mine.axis", ["3 is not one of [0, 1, 2]"]),
])
def test_schema_checks_local_sources(entry, key, words):
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate_schema(_config(mine=entry), "c.yaml", SCHEMA)
    assert str(err.value).startswith(f"c.yaml: {key}: ")
    assert all(w in str(err.value) for w in words)


def test_keys_of_another_source_are_named():
    config = _config(mine={"source": "nnunet", "path": "p", "images": "i"})
    cfg.validate_schema(config, "c.yaml", SCHEMA)
    with pytest.raises(cfg.ConfigError, match=r"^c\.yaml: datasets\.mine: \['images'\] not used by source nnunet; "
                                              r"it accepts \[.*'axis'.*'label'.*\]"):
        cfg.check_config(config, "c.yaml")
