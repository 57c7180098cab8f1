"""3-D datasets scored per volume: slices' pixel counts summed per case; the table says which unit it shows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tunevlseg.report.collect import load_per_image, per_volume
from tunevlseg.report.tables import write_dice_tables


def _slices():
    # case a: slices (inter, pred, true) = (8, 10, 10), (0, 4, 0), (2, 2, 6) -> 2*10 / (16 + 16) = 0.625
    # case b: one empty slice predicted empty -> 1; case c: prediction only -> 0
    return pd.DataFrame({
        "id": ["a_s00", "a_s01", "a_s02", "b_s00", "c_s03"],
        "dice": [0.8, 0.0, 0.5, 1.0, 0.0], "iou": [0.667, 0.0, 0.333, 1.0, 0.0],
        "case": ["a", "a", "a", "b", "c"], "inter": [8, 0, 2, 0, 0], "pred_px": [10, 4, 2, 0, 5],
        "true_px": [10, 0, 6, 0, 0]})


def test_per_volume_dice_sums_over_the_case():
    out = per_volume(_slices()).set_index("id")
    assert out.loc["a", "dice"] == pytest.approx(0.625)
    assert out.loc["a", "iou"] == pytest.approx(10 / 22)
    assert out.loc["b", "dice"] == 1.0 and out.loc["c", "dice"] == 0.0
    assert out["n_slices"].tolist() == [3, 1, 1]
    assert _slices()["dice"].mean() == pytest.approx(0.46)  # the per-slice mean differs


def _replicate(folder, cell, replicate, frame):
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"model": cell[0], "method": cell[1], "dataset": cell[2],
                                                     "replicate": replicate}))
    frame.to_csv(folder / "test_metrics.csv", index=False)
    return folder / "result.json"


def test_load_per_image_gives_volumes_for_case_datasets_only(tmp_path):
    vol = _replicate(tmp_path / "v", ("clipseg", "coop", "myct"), 0, _slices())
    img = _replicate(tmp_path / "i", ("clipseg", "coop", "polyps"), 0,
                     pd.DataFrame({"id": ["x", "y"], "dice": [0.9, 0.7], "iou": [0.8, 0.6]}))
    frame = load_per_image([vol, img])
    assert frame.groupby("dataset")["unit"].first().to_dict() == {"myct": "volume", "polyps": "image"}
    assert frame.loc[frame["dataset"] == "myct", "id"].tolist() == ["a", "b", "c"]
    assert frame.loc[frame["dataset"] == "myct", "dice"].mean() == pytest.approx((0.625 + 1 + 0) / 3)
    assert frame.loc[frame["dataset"] == "polyps", "dice"].tolist() == [0.9, 0.7]


def test_the_table_names_the_volume_datasets(tmp_path):
    best = pd.DataFrame({"model": ["clipseg"] * 2, "method": ["coop"] * 2, "dataset": ["myct", "polyps"],
                         "test_dice_mean": [0.54, 0.8], "test_dice_std": [0.1, 0.1]})
    paths = write_dice_tables(best, tmp_path / "dice", volume_datasets=["myct"])
    md, tex = paths[1].read_text(), paths[2].read_text()
    assert "Unit: Dice per volume (2·Σ|P∩G| / (Σ|P|+Σ|G|) over a case's test slices) for myct; per image" in md
    assert "Dice per volume (overlap and sizes summed over a case's test slices) for myct" in tex
    plain = write_dice_tables(best, tmp_path / "plain")[1].read_text()
    assert "Unit:" not in plain and plain.endswith("|\n")  # 2-D datasets: the table as before


def test_report_unit_image_keeps_the_slices(tmp_path):
    vol = _replicate(tmp_path / "v", ("clipseg", "coop", "myct"), 0, _slices())
    frame = load_per_image([vol], unit="image")
    assert frame["unit"].unique().tolist() == ["image"] and len(frame) == 5
    assert frame["dice"].mean() == pytest.approx(0.46)
    with pytest.raises(ValueError, match="report.unit must be volume or image, got 'voxel'"):
        load_per_image([vol], unit="voxel")
