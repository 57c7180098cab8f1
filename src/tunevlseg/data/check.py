"""``tunevlseg data check``: every configured dataset, weights path and device, checked before any job runs.

Two depths. :func:`start_problems` is what the workflow runs at every start (cheap: files exist and
pair up, weights paths exist, the requested device exists; no pixel is decoded). :func:`check_config_data`
(the CLI) adds the pixels: every mask is decoded under its rule and must be binary (or hold the
target label), and agree in size with its image. Each problem is one line naming the config key,
the dataset and the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tunevlseg.data.local import is_local, local_rows
from tunevlseg.data.masks import load_mask, open_image

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name on the model hub (not checkable offline)


def device_problem(device: str, source: str, has_cuda=None) -> str | None:
    """``device: cuda`` (or ``cuda:N``) on a machine without that CUDA device: the one-line config error."""
    device = str(device or "auto")
    if not device.startswith("cuda"):
        return None
    if has_cuda is None:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    else:
        count = int(has_cuda)
    want = int(device.split(":")[1]) if ":" in device else 0
    if want < count:
        return None
    found = "no CUDA device" if count == 0 else f"{count} CUDA device(s) (cuda:0..cuda:{count - 1})"
    return (f"{source}: device: {device!r} requested but this machine has {found}; "
            f"use device: auto (CUDA when available, else CPU) or cpu")


def weights_problems(config: dict, source: str) -> list[str]:
    """Model weights that name a local path which does not exist (hub names and ``standin`` pass)."""
    out = []
    models = (config.get("benchmark") or {}).get("models") or list(config.get("models") or {})
    for model in models:
        weights = str(((config.get("models") or {}).get(model) or {}).get("weights", "standin"))
        if weights == "standin" or Path(weights).expanduser().exists():
            continue
        if HUB_NAME.match(weights) and not weights.endswith((".pth", ".pt", ".bin", ".safetensors", ".ckpt")):
            continue  # a hub name, fetched by the job (or a missing relative folder that looks like one)
        out.append(f"{source}: models.{model}.weights: {weights} does not exist (a local folder or checkpoint "
                   f"file, a hub name org/name, or standin)")
    return out


def dataset_problems(name: str, cfg: dict, source: str) -> tuple[list[str], list[dict]]:
    """Cheap checks of one dataset: ``(problems, its samples.csv rows)`` (rows only for local sources)."""
    src = cfg.get("source", "synthetic")
    if is_local(src):
        try:
            return [], local_rows(name, cfg, source)
        except (OSError, ValueError, KeyError) as e:
            return [str(e).splitlines()[0]], []
    if cfg.get("archive") and not Path(cfg["archive"]).expanduser().exists():
        return [f"{source}: datasets.{name}.archive: {cfg['archive']} does not exist"], []
    if cfg.get("annotations") and not Path(cfg["annotations"]).expanduser().is_dir():
        return [f"{source}: datasets.{name}.annotations: folder {cfg['annotations']} does not exist"], []
    return [], []


def start_problems(config: dict, source: str, device: bool = True) -> list[str]:
    """What the workflow checks at start: datasets' files exist and pair up, weights paths, device."""
    out = []
    for name, cfg in (config.get("datasets") or {}).items():
        out += dataset_problems(name, cfg or {}, source)[0]
    out += weights_problems(config, source)
    problem = device_problem(config.get("device", "auto"), source) if device else None
    return out + ([problem] if problem else [])


def _image_shape(path: Path) -> tuple[int, int]:
    im = open_image(path, "image")
    return im.height, im.width


def row_problem(row: dict, where: str) -> str | None:
    """Decode one row's mask under its rule (and a volume pair's headers and labels); a problem line or None."""
    image, mask = Path(row["image"]), Path(row["mask"])
    try:
        if row.get("label") not in (None, ""):
            import nibabel as nib

            vol, lab = nib.load(str(image)), nib.load(str(mask))
            if vol.shape[:3] != lab.shape[:3]:
                return f"{where}: size mismatch: image {image} is {vol.shape} but labels {mask} are {lab.shape}"
            labels = np.asarray(lab.dataobj)
            if not np.isfinite(labels).all() or not np.allclose(labels, np.rint(labels)):
                return f"{where}: labels {mask} are not integer label values"
            return None
        load_mask(Path("/"), str(mask), row.get("mask_rule") or "", _image_shape(image))
    except (OSError, ValueError) as e:
        return f"{where}: {str(e).splitlines()[0]}"
    return None


def check_config_data(config: dict, source: str, device: bool = True) -> tuple[list[str], list[str]]:
    """``(report lines, problems)`` of every dataset (pixels decoded), the weights and the device."""
    lines, problems = [], []
    for name, cfg in (config.get("datasets") or {}).items():
        cfg = cfg or {}
        found, rows = dataset_problems(name, cfg, source)
        for row in rows:
            problem = row_problem(row, f"{source}: datasets.{name} ({row['id']})")
            if problem:
                found.append(problem)
        src = cfg.get("source", "synthetic")
        if found:
            lines.append(f"{name} ({src}): {len(found)} problem(s)")
        elif is_local(src):
            splits = sorted({r.get("split") for r in rows if r.get("split")})
            lines.append(f"{name} ({src}): OK, {len(rows)} samples, {len({r['image'] for r in rows})} images, "
                         f"{len({r['group'] for r in rows})} groups"
                         + (f", official splits {splits}" if splits else ""))
        elif src == "synthetic":
            lines.append(f"{name} (synthetic): OK (generated by the workflow)")
        else:
            lines.append(f"{name} ({src}): OK (registry dataset: its files are checked when obtained)")
        problems += found
    problems += weights_problems(config, source)
    problem = device_problem(config.get("device", "auto"), source) if device else None
    return lines, problems + ([problem] if problem else [])
