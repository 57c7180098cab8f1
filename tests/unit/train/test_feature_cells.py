"""A cell on the feature cache, as the workflow runs it: `tunevlseg features`, then `tune --features`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tunevlseg.cli import main
from tunevlseg.tune import CellRunner, CellSpec

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "depth": {"type": "int", "low": 1, "high": 2}}


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("tissue", n=24, seed=3)


@pytest.fixture(scope="module")
def features(tiny_model_dir, prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "clipseg"
    settings = dict(model="clipseg", weights=str(tiny_model_dir), model_options={}, dtype="float32", views=0,
                    seed=0, batch_size=8, device="cpu", amp=False)
    assert main(["features", "--prepared", str(prepared), "--out", str(out), "--settings", json.dumps(settings)]) == 0
    return out


def spec(model_dir, method="cocoop") -> CellSpec:
    return CellSpec(model="clipseg", method=method, dataset="tissue", weights=str(model_dir), n_trials=2,
                    search=SPACE, fixed={"hidden": 8} if method == "cocoop" else {}, device="cpu",
                    training={"epochs": 2, "batch_size": 8, "progress": False, "amp": False, "cache_dtype": "float32"})


def test_a_cell_on_the_cache_has_the_uncached_cells_trials(tiny_model_dir, prepared, features, tmp_path, one_thread):
    CellRunner(spec(tiny_model_dir), prepared, tmp_path / "plain").run()
    CellRunner(spec(tiny_model_dir), prepared, tmp_path / "cached", features).run()
    plain, cached = (pd.read_csv(tmp_path / d / "trials.csv") for d in ("plain", "cached"))
    assert list(cached["state"]) == ["COMPLETE", "COMPLETE"]
    for col in ("val_dice", "last_val_loss", "test_dice_mean", "test_iou_mean"):
        assert cached[col].tolist() == pytest.approx(plain[col].tolist(), abs=1e-5), col
    assert json.loads((tmp_path / "cached" / "best.json").read_text())["trial"] == \
        json.loads((tmp_path / "plain" / "best.json").read_text())["trial"]


def test_features_for_a_prompted_image_side_or_other_weights_are_refused(tiny_model_dir, prepared, features,
                                                                        tmp_path):
    with pytest.raises(ValueError, match="--features given for vpt"):
        CellRunner(spec(tiny_model_dir, "vpt"), prepared, tmp_path / "vpt", features)
    other = spec(tiny_model_dir)
    meta = json.loads((features / "meta.json").read_text())
    (tmp_path / "stale").mkdir()
    for f in features.iterdir():
        (tmp_path / "stale" / f.name).symlink_to(f)
    (tmp_path / "stale" / "meta.json").unlink()
    hub = {"hub": "CIDAS/clipseg-rd64-refined"}
    (tmp_path / "stale" / "meta.json").write_text(json.dumps({**meta, "weights_identity": hub}))
    with pytest.raises(ValueError, match="computed for other weights content than .*cache \\{'hub'"):
        CellRunner(other, prepared, tmp_path / "cell", tmp_path / "stale")
    assert not (tmp_path / "stale").exists()  # moved aside: the next workflow run rebuilds it
    other.training = {**other.training, "cache_views": 2}
    with pytest.raises(ValueError, match="holds 0 view\\(s\\) in float32, the cell asks for cache_views 2"):
        CellRunner(other, prepared, tmp_path / "cell", features)
