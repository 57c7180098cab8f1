"""``tunevlseg predict``: masks for a folder (or glob) of images with an exported adapter.

One output per input, at the input's own size: ``<stem>.png`` (0/255) for an image; for a NIfTI volume
``<stem>.nii.gz`` (0/1, the input's affine and header), predicted slice by slice along the axis the
benchmark slices volumes (the last), after the same intensity scaling (the recorded window, else the
volume's min-max). ``--probabilities`` adds ``<stem>_prob.npy`` (float32; ``_prob.nii.gz`` for volumes).
With ``--masks``, ``metrics.csv`` (id, dice, iou at the adapter's threshold; per volume for volumes) is
written and its mean returned. The output folder appears complete or not at all.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from .data.atomic import atomic_dir
from .data.masks import binary_mask
from .data.prepare import read_image
from .data.volumes import load_volume, window_to_uint8
from .inference.tuned import TunedAdapter, load_adapter
from .train.metrics import dice_iou

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
VOLUME_SUFFIXES = (".nii.gz", ".nii")


def stem(path: Path) -> str:
    """The file name without its image or volume suffix (``case_01.nii.gz`` → ``case_01``)."""
    name = path.name
    for suffix in (*VOLUME_SUFFIXES, *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def find_inputs(spec: str) -> list[Path]:
    """The images and volumes of a folder, or the files a glob matches, sorted; an error when none."""
    folder = Path(spec)
    if folder.is_dir():
        paths = [p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith((*IMAGE_SUFFIXES,
                                                                                           *VOLUME_SUFFIXES))]
    else:
        paths = [Path(p) for p in glob.glob(spec) if Path(p).is_file()]
    if not paths:
        raise FileNotFoundError(f"--input {spec}: no images ({', '.join(IMAGE_SUFFIXES)}) or NIfTI volumes found")
    stems = [stem(p) for p in paths]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ValueError(f"--input {spec}: several inputs share the name {twice[0]!r} (outputs are <stem>.png)")
    return sorted(paths)


def find_mask(folder: Path, name: str) -> Path:
    found = sorted(p for p in folder.glob(f"{glob.escape(name)}.*") if stem(p) == name)
    if not found:
        raise FileNotFoundError(f"--masks {folder}: no mask for {name} ({name}.png, {name}.nii.gz, ...)")
    return found[0]


def predict_files(adapter_dir: str | Path, inputs: str, out: str | Path, masks: str | Path | None = None,
                  weights: str | None = None, probabilities: bool = False, device: str = "auto",
                  phrase: str | None = None, batch_size: int = 8, progress: bool = True,
                  label: int | None = None) -> float | None:
    """Predict every input into ``out`` (see the module docstring); the mean Dice with ``masks``, else None.

    Images go through the model ``batch_size`` at a time, a volume's slices too. ``label``: the target's
    value in NIfTI label masks (default: every non-zero voxel)."""
    paths = find_inputs(inputs)
    adapter = load_adapter(adapter_dir, weights=weights, device=device)
    rows = []
    with atomic_dir(Path(out)) as tmp, tqdm(total=len(paths), desc="predict", unit="image",
                                            disable=not progress) as bar:
        for chunk in _chunks(paths, batch_size):
            targets = [find_mask(Path(masks), stem(p)) if masks else None for p in chunk]
            if is_volume(chunk[0]):
                results = [_predict_volume(adapter, chunk[0], targets[0], tmp / stem(chunk[0]), probabilities,
                                           phrase, batch_size, label)]
            else:
                results = _predict_images(adapter, chunk, targets, tmp, probabilities, phrase)
            for path, target_path, (pred, target) in zip(chunk, targets, results, strict=True):
                if target is None:
                    continue
                if target.shape != pred.shape:
                    raise ValueError(f"{target_path}: mask shape {target.shape} differs from {path}'s {pred.shape}")
                dice, iou = dice_iou(torch.from_numpy(pred)[None], torch.from_numpy(target > 0)[None])
                rows.append(dict(id=stem(path), dice=float(dice), iou=float(iou)))
            bar.update(len(chunk))
        if masks:
            pd.DataFrame(rows, columns=["id", "dice", "iou"]).to_csv(tmp / "metrics.csv", index=False)
    return float(np.mean([r["dice"] for r in rows])) if masks else None


def _chunks(paths: list[Path], size: int):
    """Runs of up to ``size`` consecutive images; every volume on its own."""
    run: list[Path] = []
    for path in paths:
        if is_volume(path) or len(run) == size:
            if run:
                yield run
            run = []
        if is_volume(path):
            yield [path]
        else:
            run.append(path)
    if run:
        yield run


def _predict_images(adapter: TunedAdapter, paths: list[Path], target_paths: list, out: Path, probabilities: bool,
                    phrase: str | None) -> list[tuple]:
    images = [read_image(p) for p in paths]
    targets = [binary_mask(t) if t is not None else None for t in target_paths]
    probs = adapter.predict(images, prompts=[adapter.prompt_for(phrase, t) for t in targets], batch_size=len(images))
    results = []
    for path, prob, target in zip(paths, probs, targets, strict=True):
        pred = prob > adapter.threshold
        Image.fromarray(pred.astype(np.uint8) * 255).save(out / f"{stem(path)}.png")
        if probabilities:
            np.save(out / f"{stem(path)}_prob.npy", prob.astype(np.float32))
        results.append((pred, target))
    return results


def _predict_volume(adapter: TunedAdapter, path: Path, target_path: Path | None, out: Path, probabilities: bool,
                    phrase: str | None, batch_size: int, label: int | None):
    import nibabel as nib

    volume = load_volume(path)
    if volume.ndim == 2:
        volume = volume[..., None]
    if volume.ndim != 3:
        raise ValueError(f"{path}: volume of shape {volume.shape}; expected 2-D or 3-D")
    target = None
    if target_path is not None:
        if not is_volume(target_path):
            raise ValueError(f"{target_path}: the mask of volume {path} must be a NIfTI volume")
        labels = np.rint(load_volume(target_path)).reshape(volume.shape)
        target = labels > 0 if label is None else labels == label
    axis = int(adapter.config["volume"].get("axis", -1))
    scaled = np.moveaxis(window_to_uint8(volume, adapter.config["volume"].get("window")), axis, -1)
    masks = None if target is None else np.moveaxis(target, axis, -1).astype(np.uint8)
    slices = [scaled[..., k] for k in range(scaled.shape[-1])]
    prompts = [adapter.prompt_for(phrase, None if masks is None else masks[..., k]) for k in range(len(slices))]
    prob = np.moveaxis(np.stack(adapter.predict(slices, prompts=prompts, batch_size=batch_size), axis=-1), -1, axis)
    pred = prob > adapter.threshold
    source = nib.load(str(path))
    shape = source.shape
    header = source.header.copy()
    header.set_data_dtype(np.uint8)
    nib.save(nib.Nifti1Image(pred.reshape(shape).astype(np.uint8), source.affine, header),
             str(out.with_name(out.name + ".nii.gz")))
    if probabilities:
        header.set_data_dtype(np.float32)
        nib.save(nib.Nifti1Image(prob.reshape(shape).astype(np.float32), source.affine, header),
                 str(out.with_name(out.name + "_prob.nii.gz")))
    return pred, target


__all__ = ["find_inputs", "predict_files", "stem"]
