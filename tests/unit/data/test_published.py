"""Published annotation files (medvlsm anns/*.json) on a synthetic raw layout: matching by image name, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tunevlseg.data.prepare import prepare_dataset
from tunevlseg.data.published import annotation_files, apply_published
from tunevlseg.data.synthetic import write_synthetic


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pub") / "tissue"
    write_synthetic("tissue", out, n=12, image_size=32, seed=4)
    return out


def _rows(raw: Path) -> list[dict]:
    with open(raw / "samples.csv", newline="") as f:
        return list(csv.DictReader(f))


def _write(folder: Path, records: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, recs in records.items():
        (folder / f"{split}.json").write_text(json.dumps(recs) if not isinstance(recs, str) else recs)
    return folder


def _record(row: dict, **prompts) -> dict:
    return {"img_name": Path(row["image"]).name, "mask_name": Path(row["mask"]).name,
            "prompts": prompts or {"p0": "", "p1": "polyp"}}


def test_by_image_name_and_folder_forms(raw, tmp_path):
    rows = _rows(raw)
    recs = {"train": [_record(r) for r in rows[:8]], "val": [_record(r) for r in rows[8:10]],
            "test": [_record(r) for r in rows[10:]]}
    folder = _write(tmp_path / "plain", recs)  # the files directly in the folder (no anns/)
    assert list(annotation_files(folder)) == ["train", "val", "test"]
    kept, report = apply_published(rows, folder)
    assert [r["split"] for r in kept] == ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    assert {r["prompts"]["p1"] for r in kept} == {"polyp."} and report["prompt_keys"] == ["p0", "p1"]
    meta = prepare_dataset(raw, tmp_path / "prep", size=16, annotations=str(folder))
    assert meta["split_sizes"] == {"train": 8, "val": 2, "test": 2} and meta["published"]["leaks"] == []


def test_bad_annotation_files_name_the_file(raw, tmp_path):
    rows = _rows(raw)
    good = [_record(r) for r in rows]
    with pytest.raises(FileNotFoundError, match=r"missing val\.json"):
        apply_published(rows, _write(tmp_path / "a", {"train": good, "test": good}))
    with pytest.raises(ValueError, match=r"b/train\.json is not readable JSON"):
        apply_published(rows, _write(tmp_path / "b", {"train": "[{", "val": good, "test": good}))
    odd = [_record(rows[0]), _record(rows[1], p0="", p1="x", p2="y")]
    with pytest.raises(ValueError, match=r"c/train\.json: record 1 has prompt keys \['p0', 'p1', 'p2'\], the others"):
        apply_published(rows, _write(tmp_path / "c", {"train": odd, "val": good, "test": good}))
    with pytest.raises(ValueError, match=r"d/val\.json: record 0 needs img_name, mask_name and a prompts mapping"):
        apply_published(rows, _write(tmp_path / "d", {"train": good, "val": [{"image": "x"}], "test": good}))
    with pytest.raises(ValueError, match=r"e/test\.json: record 0 has prompt keys \['caption'\]"):
        apply_published(rows, _write(tmp_path / "e", {"train": good, "val": good,
                                                      "test": [_record(rows[0], caption="x")]}))
