"""Qualitative panel: test images, ground truth and each cell's best-trial prediction.

One figure per dataset.  Columns are the ``k`` example samples stored by
:func:`tunevlseg.train.examples.save_examples`; the first two rows are the image and the ground
truth, then one row per ``model · method`` with that cell's prediction (probability thresholded at
0.5) and the sample's Dice in the corner.  A cell whose examples are missing (not finished, or run
before examples were saved) or were taken on other samples is a row of "—".
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from tunevlseg.report.figures import new_figure, save_figure
from tunevlseg.report.tables import MISSING

__all__ = ["THRESHOLD", "load_examples", "plot_qualitative", "prediction_mask", "qualitative_figure"]

THRESHOLD = 0.5
REQUIRED = ("image", "gt", "prob", "ids")
CELL_INCH = 1.25


def load_examples(path: Path) -> dict | None:
    """Arrays of an examples npz (``image``, ``gt``, ``prob``, ``ids``, ...); ``None`` when absent.

    Raises ``ValueError`` naming the file when it exists but is unreadable, lacks an array, or the
    arrays disagree in shape.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path}: cannot read examples ({exc})") from exc
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise ValueError(f"{path}: examples file lacks array(s) {', '.join(missing)}")
    k = len(arrays["ids"])
    image, gt, prob = arrays["image"], arrays["gt"], arrays["prob"]
    if image.ndim != 4 or image.shape[-1] != 3 or gt.shape != image.shape[:3] or prob.shape != gt.shape \
            or len(gt) != k:
        raise ValueError(f"{path}: examples arrays disagree: image {image.shape}, gt {gt.shape}, "
                         f"prob {prob.shape}, {k} ids")
    return arrays


def prediction_mask(prob: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Binary prediction (uint8 {0, 1}) of a probability map: ``prob > threshold``."""
    return (np.asarray(prob, dtype=np.float32) > threshold).astype(np.uint8)


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two binary masks; 1 when both are empty (the benchmark's convention)."""
    total = int(pred.sum()) + int(gt.sum())
    return 1.0 if total == 0 else 2.0 * int((pred.astype(bool) & gt.astype(bool)).sum()) / total


def _show(ax, array: np.ndarray | None, text: str | None = None, mask: bool = False) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if array is None:
        ax.set_facecolor("#eeeeee")
        ax.text(0.5, 0.5, text or MISSING, ha="center", va="center", fontsize=14, transform=ax.transAxes)
        return
    if mask:
        ax.imshow(array, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(array, interpolation="nearest")
    if text:
        ax.text(0.03, 0.97, text, ha="left", va="top", fontsize=7, color="yellow", transform=ax.transAxes,
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})


def qualitative_figure(dataset: str, rows: Mapping[str, dict | None],
                       threshold: float = THRESHOLD) -> Figure:
    """Build the panel of one dataset from ``{row label: examples arrays or None}`` (in row order).

    The reference samples (image, ground truth, ids) come from the first row that has examples;
    a row whose ``ids`` differ from them is shown as missing ("other samples").  The prediction of
    row r, sample j is ``prob[j] > threshold`` and its corner label the Dice against ``gt[j]``.
    No examples at all gives a one-line figure saying so.
    """
    labels = list(rows)
    reference = next((rows[r] for r in labels if rows[r] is not None), None)
    if reference is None:
        fig = new_figure(5.0, 2.0)
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.set_title(f"{dataset}: qualitative examples")
        ax.text(0.5, 0.5, "no examples stored yet", ha="center", va="center", fontsize=13,
                transform=ax.transAxes)
        return fig
    ids = [str(i) for i in reference["ids"]]
    k = len(ids)
    n_rows = 2 + len(labels)
    fig = new_figure(1.6 + CELL_INCH * k, 0.6 + CELL_INCH * n_rows)
    axes = fig.subplots(n_rows, k, squeeze=False)
    for j in range(k):
        _show(axes[0, j], reference["image"][j])
        axes[0, j].set_title(ids[j], fontsize=8)
        _show(axes[1, j], reference["gt"][j].astype(np.uint8), mask=True)
    axes[0, 0].set_ylabel("image", fontsize=9)
    axes[1, 0].set_ylabel("ground truth", fontsize=9)
    for r, label in enumerate(labels, start=2):
        examples = rows[label]
        same = examples is not None and [str(i) for i in examples["ids"]] == ids
        for j in range(k):
            if not same:
                _show(axes[r, j], None, MISSING if examples is None else "other samples")
                continue
            pred = prediction_mask(examples["prob"][j], threshold)
            _show(axes[r, j], pred, f"{_dice(pred, reference['gt'][j]):.2f}", mask=True)
        axes[r, 0].set_ylabel(label.replace(" · ", "\n"), fontsize=9)  # model over method: fits the row
    fig.suptitle(f"{dataset}: best trial's prediction (probability > {threshold:g}) per cell")
    return fig


def plot_qualitative(dataset: str, rows: Mapping[str, dict | None], out_png: Path, dpi: int = 150,
                     threshold: float = THRESHOLD) -> Path:
    """Save :func:`qualitative_figure` to ``out_png`` atomically; return ``out_png``."""
    return save_figure(qualitative_figure(dataset, rows, threshold), out_png, dpi)
