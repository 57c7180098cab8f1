"""Export a cell's tuned adapter: a self-describing folder (:mod:`tunevlseg.inference.files`) that
``tunevlseg.load_adapter`` and ``tunevlseg predict`` use without the benchmark's files.

What is exported is seed replicate R of the cell (default 0: the study's best trial): its checkpoint
(``best.pt``, read with ``weights_only``) is loaded into the learner the cell built, on the cell's base
model, and written as safetensors with everything needed to apply it — read from the cell's own records
(``provenance.json``, ``fingerprint.json``, ``seeds/<r>/result.json``, the prepared cache's manifest).
"""

from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path

import pandas as pd

from . import __version__
from .cells import CellFiles
from .inference.files import FORMAT, FORMAT_VERSION, write_adapter
from .inference.tuned import check_base_weights
from .jsonio import read_json
from .methods import get_method
from .models.registry import load_adapter as load_base_model
from .study import read_fingerprint, weights_identity
from .train.checkpoint import load_trainable
from .train.loop import TrainSettings
from .train.metrics import logits_to_mask
from .tune import NOT_LEARNER_KEYS, CellSpec, make_learner

#: The threshold the cell's test metrics used (``evaluate_test`` → ``logits_to_mask``'s default).
THRESHOLD = inspect.signature(logits_to_mask).parameters["threshold"].default
#: Volumes are sliced along this axis (``tunevlseg.data.prepare``: the last one).
VOLUME_AXIS = -1


def export_cell(cell_dir: str | Path, out: str | Path, replicate: int = 0) -> dict:
    """Write the adapter of seed replicate ``replicate`` of the cell at ``cell_dir`` to ``out`` (atomically).

    Returns the adapter config. One-line errors naming the file for a cell without a study (zero-shot),
    without that replicate, or whose base weights changed since it was tuned.
    """
    files = CellFiles(str(Path(cell_dir)))
    provenance = read_json(Path(files.provenance_json))
    spec = CellSpec.from_dict(provenance["cell"])
    method = get_method(spec.method)
    if not method.tuned:
        raise ValueError(f"{cell_dir}: {spec.method} learns nothing: there is no adapter to export")
    result, checkpoint, metrics_csv = _replicate(files, replicate)
    config = _config(files, provenance, spec, result, replicate, metrics_csv)
    check_base_weights(config, spec.weights, files.provenance_json)
    model = load_base_model(spec.model, spec.weights, spec.model_options)
    config["normalization"] = {"mean": model.mean.flatten().tolist(), "std": model.std.flatten().tolist()}
    hparams = {k: v for k, v in (result.get("params") or {}).items() if k not in NOT_LEARNER_KEYS}
    learner = make_learner(spec, model, int(result.get("depth") or 0), hparams)
    load_trainable(learner, checkpoint)
    config.update(depth=learner.depth, n_ctx=learner.n_ctx, learner_options=hparams)
    tensors = model.model.state_dict() if method.trains_model else learner.state_dict()
    config["tensors"] = "model" if method.trains_model else "learner"
    write_adapter(out, config, tensors)
    return config


def _replicate(files: CellFiles, replicate: int) -> tuple[dict, Path, Path]:
    """(result.json, checkpoint, test_metrics.csv) of seed replicate ``replicate``."""
    seed = files.seed(replicate)
    if not Path(seed.result_json).is_file():
        raise FileNotFoundError(f"{seed.result_json}: the cell has no seed replicate {replicate} (tuning.final_seeds)")
    result = read_json(Path(seed.result_json))
    if replicate == 0:
        if result.get("trial") is None:
            raise ValueError(f"{seed.result_json}: the cell has no completed trial: nothing to export")
        checkpoint = files.trial(int(result["trial"])).checkpoint
    else:
        checkpoint = seed.checkpoint
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: the replicate's checkpoint is missing")
    return result, checkpoint, Path(seed.test_metrics_csv)


def _config(files: CellFiles, provenance: dict, spec: CellSpec, result: dict, replicate: int,
            metrics_csv: Path) -> dict:
    """Everything of the adapter config but what needs the model (normalisation, tensors)."""
    prepared = Path(provenance["prepared_dir"])
    meta = _prepared_meta(prepared)
    stored = read_fingerprint(files) or {}
    identity = (stored.get("components") or {}).get("weights") or weights_identity(spec.weights)
    training = TrainSettings.from_dict(spec.training)
    features = provenance.get("features", _assumed_features(spec, training))
    metrics = pd.read_csv(metrics_csv)
    phrases = _phrases(prepared)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
        "model": spec.model, "model_options": spec.model_options,
        "base_weights": {"source": str(Path(spec.weights).resolve()) if Path(spec.weights).exists() else spec.weights,
                         "identity": identity},
        "method": spec.method, "learner_options": {}, "depth": None, "n_ctx": spec.n_ctx,
        "prompt": {"variant": spec.prompt_key, "phrase": phrases[0] if len(phrases) == 1 else None,
                   "phrases": phrases},
        "image_size": int(meta["size"]), "normalization": None, "threshold": THRESHOLD,
        "amp": training.amp, "image_features_dtype": features["dtype"] if features else "float32",
        "volume": {"axis": VOLUME_AXIS, "window": _window(meta)},
        "tensors": None,
        "cell": {"folder": str(files.path), "dataset": spec.dataset, "replicate": replicate,
                 "trial": result.get("trial"), "seed": result.get("seed"), "fingerprint": stored.get("fingerprint"),
                 "val_dice": result.get("val_dice"), "test_dice_mean": float(metrics["dice"].mean()),
                 "test_iou_mean": float(metrics["iou"].mean()), "n_test": int(len(metrics))},
    }


def _prepared_meta(prepared: Path) -> dict:
    path = prepared / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FileNotFoundError(f"{path}: the cell's prepared dataset is needed to export it ({err})") from err


def _phrases(prepared: Path) -> list[str]:
    """The class phrases of the dataset (the ``p1`` prompt is ``<phrase>.``), sorted."""
    with open(prepared / "manifest.csv", newline="") as fh:
        return sorted({row["p1"].strip().removesuffix(".") for row in csv.DictReader(fh)})


def _assumed_features(spec: CellSpec, training: TrainSettings) -> dict | None:
    """For a cell whose provenance predates the ``features`` record: the workflow gives a cache to every
    tuned method with a frozen image side while ``training.cache_frozen`` is ``auto``."""
    if get_method(spec.method).frozen_image_side and training.cache_frozen == "auto":
        return {"dtype": training.cache_dtype}
    return None


def _window(meta: dict) -> list | None:
    """The intensity window the dataset's volumes were scaled with (None: per-volume min-max)."""
    source = (meta.get("index") or {}).get("source")
    if not source:
        return meta.get("window")
    from .data.registry import get_spec

    return get_spec(source).prepare.get("window")


__all__ = ["THRESHOLD", "export_cell"]
