"""The ``discs`` generator behind the demo's two 2-D targets (docs/explanation/demo-standins.md, "The three targets").

``newlook`` (a known word, "white disc", on a pattern the stand-in never saw, next to a flat disc of
the same mean colour) and ``newword`` (the pretraining look, a word never trained with a mask). What
the frozen stand-in makes of them (zero-shot high on the pretraining look, low on the new one) is
measured by ``tests/bench/demo_premises.py``; here: the pixels, masks and layout those premises rest on.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tunevlseg.data.synthetic import DISC_COLOURS, write_synthetic

ROOT = Path(__file__).resolve().parents[3]
NEWLOOK = dict(phrase="white disc", target_rgb=[135, 135, 135], target_pattern="checker", pattern_contrast=100,
               distractor_rgb=[[135, 135, 135]])


def rows_of(folder: Path) -> list[dict]:
    with open(folder / "samples.csv", newline="") as f:
        return list(csv.DictReader(f))


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def newlook(tmp_path_factory):
    out = tmp_path_factory.mktemp("discs") / "newlook"
    write_synthetic("discs", out, n=12, image_size=48, seed=3, **NEWLOOK)
    return out


@pytest.fixture(scope="module")
def newword(tmp_path_factory):
    out = tmp_path_factory.mktemp("discs") / "newword"
    write_synthetic("discs", out, n=12, image_size=48, seed=4, phrase="lesion")
    return out


def test_raw_layout(newlook):
    rows = rows_of(newlook)
    assert [r["id"] for r in rows] == [f"img{i:05d}" for i in range(12)]
    assert list(rows[0]) == ["id", "image", "mask", "phrase", "group"]
    assert {r["phrase"] for r in rows} == {"white disc"}
    for r in rows:
        image, mask = png(newlook / r["image"]), png(newlook / r["mask"])
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        assert mask.shape == (48, 48) and set(np.unique(mask)) == {0, 255}
        assert r["group"] == r["id"]
        assert np.pi * 0.11**2 < (mask > 0).mean() < np.pi * 0.23**2  # one disc of radius 12-22 % of the side


def test_newlook_target_is_a_checker_of_the_distractors_mean_colour(newlook):
    """Same mean colour as the flat distractor: only the pattern tells them apart."""
    for r in rows_of(newlook):
        image, mask = png(newlook / r["image"]).astype(float), png(newlook / r["mask"]) > 0
        target = image[mask]
        assert np.abs(target.mean(axis=0) - 135).max() < 25, target.mean(axis=0)
        # black and white squares of the mesh: half the pixels near 235 +- jitter, half near 35
        grey = target.mean(axis=1)
        assert (grey > 185).mean() > 0.4 and (grey < 85).mean() > 0.4
        # 2-px checker: horizontally adjacent target pixels alternate light/dark
        inside = mask[:, :-1] & mask[:, 1:]
        g = image.mean(axis=2)
        assert np.median(np.abs(g[:, :-1] - g[:, 1:])[inside]) > 150
        # the distractor: a flat disc of the same mean colour outside the mask
        flat = (np.abs(image - 135).max(axis=2) < 30) & ~mask
        assert flat.sum() > 0.6 * np.pi * (0.12 * 48) ** 2


def test_newword_is_the_pretraining_look(newword):
    """Flat white target (as in shapes), one flat red/green/blue distractor, the untrained word."""
    rows = rows_of(newword)
    assert {r["phrase"] for r in rows} == {"lesion"}
    refs = {name: np.array(rgb, float) for name, rgb in DISC_COLOURS.items()}
    seen = set()
    for r in rows:
        image, mask = png(newword / r["image"]).astype(float), png(newword / r["mask"]) > 0
        mean = image[mask].mean(axis=0)
        assert min(refs, key=lambda c: np.linalg.norm(refs[c] - mean)) == "white"
        assert image[mask].std(axis=0).max() < 8  # flat: jitter per disc, 3-grey-level noise per pixel
        outside = image[~mask]
        for name in ("red", "green", "blue"):
            if (np.linalg.norm(outside - refs[name], axis=1) < 40).sum() > 0.6 * np.pi * (0.12 * 48) ** 2:
                seen.add(name)
    assert seen == {"red", "green", "blue"}


def test_deterministic_and_options(newlook, tmp_path):
    write_synthetic("discs", tmp_path / "a", n=12, image_size=48, seed=3, **NEWLOOK)
    first = rows_of(newlook)[0]
    assert (tmp_path / "a" / first["image"]).read_bytes() == (newlook / first["image"]).read_bytes()
    assert (tmp_path / "a" / first["mask"]).read_bytes() == (newlook / first["mask"]).read_bytes()
    write_synthetic("discs", tmp_path / "b", n=20, image_size=48, seed=3, empty_fraction=0.25, distractor_prob=0.0,
                    gain=[0.5, 0.5, 0.5])
    rows = rows_of(tmp_path / "b")
    masks = [png(tmp_path / "b" / r["mask"]) > 0 for r in rows]
    assert sum(not m.any() for m in masks) == 5
    for r, m in zip(rows, masks):
        image = png(tmp_path / "b" / r["image"]).astype(float)
        if m.any():  # halved white target
            assert np.abs(image[m].mean(axis=0) - 117.5).max() < 15
        assert image[~m].max() < 150  # no distractor, halved background
    with pytest.raises(ValueError, match="pattern"):
        write_synthetic("discs", tmp_path / "c", n=2, image_size=48, seed=0, target_pattern="dots")


def test_demo_config_uses_these_targets():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    look, word = config["datasets"]["newlook"]["synthetic"], config["datasets"]["newword"]["synthetic"]
    vocabulary = config["models"]["clipseg"]["standin"]["vocabulary"]
    assert look["kind"] == word["kind"] == "discs"
    assert look["phrase"] == "white disc" and look["target_pattern"] != "flat"  # known word, new look
    assert word.get("target_pattern", "flat") == "flat" and word["phrase"] in vocabulary  # known look, new word
    assert word["phrase"] not in {"red", "green", "blue", "white", "disc"}  # never trained with a mask
    assert {"newlook", "newword", "ctvolumes"} <= set(config["benchmark"]["datasets"])
