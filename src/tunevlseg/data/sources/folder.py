"""``source: folder``: a folder of images and a folder of masks of the same file stems (config only).

Config keys (``datasets.<name>``): ``images``, ``masks`` (folders), ``phrase`` (the class phrase), and
optionally ``mask_pattern`` (the mask's stem from the image's, default ``{stem}``, e.g.
``{stem}_mask``; any image extension), ``mask_rule`` (``binary``, ``threshold:T``, ``label:V``,
``channels:T:0,1``; default ``threshold:127`` for JPEG masks, else ``binary``), ``split_file`` (CSV
``image,split``: an official split), ``group`` (a regex on the image stem: its first capture group is
the patient or sequence that the leak-free split keeps together) and ``phrase_file`` (CSV
``image,phrase``: per-image phrases). Images: png, jpg, tif, bmp (8/16-bit, grey or RGB).
"""

from __future__ import annotations

from pathlib import Path

from tunevlseg.data.sources.common import IMAGE_SUFFIXES, check_split, files, group_of, read_table

KEYS = ("images", "masks", "phrase", "mask_pattern", "mask_rule", "split_file", "group", "phrase_file")
REQUIRED = ("images", "masks", "phrase")


def _folder(cfg: dict, key: str, where: str) -> Path:
    folder = Path(cfg[key]).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{where}.{key}: folder {folder} does not exist")
    return folder


def mask_of(image: Path, masks: dict[str, Path], pattern: str, mask_dir: Path, where: str) -> Path:
    """The mask file of ``image``: the stem ``pattern`` gives, with any image extension."""
    stem = pattern.format(stem=image.stem)
    if stem not in masks:
        raise FileNotFoundError(f"{where}: image {image} has no mask {mask_dir / stem}.* "
                                f"(looked for {', '.join(IMAGE_SUFFIXES)}; mask_pattern {pattern!r})")
    return masks[stem]


def index(cfg: dict, where: str) -> list[dict]:
    """samples.csv rows of a folder dataset; ``where`` (``<config>: datasets.<name>``) prefixes every error."""
    images, mask_dir = _folder(cfg, "images", where), _folder(cfg, "masks", where)
    found = files(images, IMAGE_SUFFIXES)
    if not found:
        raise ValueError(f"{where}.images: no images ({', '.join(IMAGE_SUFFIXES)}) in {images}")
    stems = [p.stem for p in found]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise ValueError(f"{where}.images: several images share the stem(s) {dup[:5]} in {images}")
    masks: dict[str, Path] = {}
    for p in files(mask_dir, IMAGE_SUFFIXES):
        if p.stem in masks:
            raise ValueError(f"{where}.masks: two masks share the stem {p.stem!r}: {masks[p.stem]}, {p}")
        masks[p.stem] = p
    pattern = cfg.get("mask_pattern") or "{stem}"
    splits = read_table(cfg["split_file"], "image", ("split",), f"{where}.split_file") if cfg.get("split_file") else {}
    phrases = read_table(cfg["phrase_file"], "image", ("phrase",), f"{where}.phrase_file") if cfg.get(
        "phrase_file") else {}
    rows = []
    for img in found:
        mask = mask_of(img, masks, pattern, mask_dir, where)
        rule = cfg.get("mask_rule") or ("threshold:127" if mask.suffix.lower() in (".jpg", ".jpeg") else "binary")
        row = {"id": img.stem, "image": str(img.resolve()), "mask": str(mask.resolve()),
               "phrase": (phrases.get(img.stem) or {}).get("phrase") or cfg["phrase"],
               "group": group_of(img.stem, cfg.get("group"), f"{where}.group ({img})"), "mask_rule": rule}
        if splits:
            if img.stem not in splits:
                raise ValueError(f"{where}.split_file: {cfg['split_file']} has no row for image {img.name}")
            row["split"] = check_split(splits[img.stem]["split"], f"{where}.split_file ({img.name})")
        rows.append(row)
    return rows


def inputs(cfg: dict) -> list[str]:
    """What the index rule reads (a changed folder or table reruns index and prepare)."""
    return [str(Path(cfg[k]).expanduser()) for k in ("images", "masks", "split_file", "phrase_file") if cfg.get(k)]

