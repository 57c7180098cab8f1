"""Synthetic datasets written in a real raw layout (see ``prepare.py``).

Three kinds drive the demo (docs/explanation/demo-standins.md):

- ``shapes``: pretraining set for the tiny CLIPSeg stand-in. Two discs that
  differ only in colour on a smooth textured background; the prompt names the
  target's colour ("red disc"), so the model must read its prompt.
- ``discs``: the demo's 2-D targets, the ``shapes`` scene with one target and one
  distractor disc whose colour, pattern (flat, checker, stripes) and phrase are options:
  ``newlook`` (a known word, "white disc", on a checker the stand-in never saw, next to a
  flat disc of the same mean colour) and ``newword`` (the pretraining look, the untrained
  word "lesion").
- ``tissue``: 2-D endoscopy-like target (not in the demo grid). Warm blotchy tissue,
  target = irregular blob of an unseen colour (yellowish), distractor blob of a
  seen colour (blue) in ~70 % of images, ~10 % of images without target;
  prompt = an unseen word ("polyp"). Colours and word are options, so a second
  target "seen colours, new word" is one call away.
- ``ctvolumes``: 3-D radiology-like target, CAMUS-like folders of NIfTI
  volumes: bright ellipsoid = label 1 (target), darker ellipsoid = label 2.

Everything is deterministic from ``seed``; images are built with vectorised
numpy (no per-pixel loops).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from tunevlseg.data.atomic import atomic_dir

DISC_COLOURS = {
    "red": (210, 40, 40),
    "green": (40, 190, 60),
    "blue": (45, 70, 215),
    "white": (235, 235, 235),
}
COLUMNS_2D = ["id", "image", "mask", "phrase", "group"]
COLUMNS_3D = COLUMNS_2D + ["label"]


@lru_cache(maxsize=32)
def _interp(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) matrix of cosine-smoothed linear interpolation weights."""
    x = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.clip(np.floor(x).astype(int), 0, n_in - 2)
    w = (1.0 - np.cos(np.pi * (x - i0))) / 2.0
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), i0] = 1.0 - w
    m[np.arange(n_out), i0 + 1] += w
    return m


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], grid: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise of ``shape`` (2-D or 3-D) + a channel axis, std ≈ 1 at grid points."""
    g = rng.standard_normal((grid,) * len(shape) + (channels,), dtype=np.float32)
    if len(shape) == 2:  # fast path: (c, g, g) -> (c, H, W) by two matmuls
        out = _interp(shape[0], grid) @ g.transpose(2, 0, 1) @ _interp(shape[1], grid).T
        return out.transpose(1, 2, 0)
    for ax, n in enumerate(shape):
        g = np.moveaxis(np.tensordot(_interp(n, grid), np.moveaxis(g, ax, 0), axes=1), 0, ax)
    return g


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size]
    return yy.astype(np.float32), xx.astype(np.float32)


def _save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8)).save(path, compress_level=1)


def _place(rng: np.random.Generator, size: int, radii: list[float], margin: float = 2.0):
    """Centres for non-overlapping objects of bounding radii ``radii`` inside the image.

    Returns ``(centres, scale)``: radii are shrunk by ``scale`` (< 1) when no
    placement is found quickly.
    """
    scale = 1.0
    while True:
        r = [x * scale for x in radii]
        for _ in range(200):
            centres = [rng.uniform(x + 1, size - 1 - x, 2) for x in r]
            if all(
                np.hypot(*(centres[a] - centres[b])) >= r[a] + r[b] + margin
                for a in range(len(r))
                for b in range(a)
            ):
                return centres, scale
        scale *= 0.9


def _blob(rng: np.random.Generator, yy, xx, centre, radius: float) -> np.ndarray:
    """Irregular blob: union of 2–4 overlapping rotated ellipses within ~``radius`` of ``centre``."""
    mask = np.zeros(yy.shape, bool)
    for _ in range(rng.integers(2, 5)):
        cy, cx = centre + rng.uniform(-0.35, 0.35, 2) * radius
        a, b = rng.uniform(0.45, 0.65, 2) * radius
        t = rng.uniform(0, np.pi)
        c, s = np.cos(t), np.sin(t)
        dy, dx = yy - float(cy), xx - float(cx)
        mask |= ((dy * c + dx * s) / a) ** 2 + ((dx * c - dy * s) / b) ** 2 <= 1.0
    return mask


def _write_2d(out_dir: Path, i: int, image: np.ndarray, mask: np.ndarray, phrase: str) -> dict:
    sid = f"img{i:05d}"
    _save_png(image, out_dir / "images" / f"{sid}.png")
    _save_png(mask.astype(np.uint8) * 255, out_dir / "masks" / f"{sid}.png")
    return {"id": sid, "image": f"images/{sid}.png", "mask": f"masks/{sid}.png", "phrase": phrase, "group": sid}


def generate_shapes(out_dir: Path, n: int, image_size: int, rng: np.random.Generator, colours=None,
                    both_targets: bool = True) -> list[dict]:
    """Two discs differing only in colour; target = one of them, phrase ``"<colour> disc"``.

    With ``both_targets`` (default) every image is listed twice, once per disc,
    with that disc's mask and phrase (like one sample per class in VOC): the
    same pixels then need different masks, so a model can only lower its loss by
    reading the prompt. Without it, one disc is drawn as the single target.
    """
    colours = list(colours or DISC_COLOURS)
    unknown = [c for c in colours if c not in DISC_COLOURS]
    if unknown or len(colours) < 2:
        raise ValueError(f"colours must be >= 2 of {list(DISC_COLOURS)}, got {colours}")
    s = image_size
    yy, xx = _grid(s)
    rows = []
    for i in range(n):
        base = (120.0 + rng.uniform(-25, 25, 3)).astype(np.float32)
        tex = 22.0 * smooth_noise(rng, (s, s), 4, 1) + 10.0 * smooth_noise(rng, (s, s), 6, 3)
        img = base + tex
        radii = list(rng.uniform(0.12, 0.22, 2) * s)
        centres, _ = _place(rng, s, radii)
        picked = rng.choice(len(colours), 2, replace=False)
        target = int(rng.integers(2))
        discs = []
        for k in range(2):
            disc = (yy - centres[k][0]) ** 2 + (xx - centres[k][1]) ** 2 <= radii[k] ** 2
            img[disc] = np.asarray(DISC_COLOURS[colours[picked[k]]]) + rng.integers(-20, 21, 3)
            discs.append(disc)
        img += 3.0 * rng.standard_normal(img.shape, dtype=np.float32)
        if not both_targets:
            rows.append(_write_2d(out_dir, i, img, discs[target], f"{colours[picked[target]]} disc"))
            continue
        sid = f"img{i:05d}"
        _save_png(img, out_dir / "images" / f"{sid}.png")
        for k in range(2):
            colour = colours[picked[k]]
            _save_png(discs[k].astype(np.uint8) * 255, out_dir / "masks" / f"{sid}_{colour}.png")
            rows.append({"id": f"{sid}_{colour}", "image": f"images/{sid}.png", "mask": f"masks/{sid}_{colour}.png",
                         "phrase": f"{colour} disc", "group": sid})
    return rows


PATTERNS = ("flat", "checker", "stripes")


def _pattern(kind: str, yy: np.ndarray, xx: np.ndarray, period: int) -> np.ndarray:
    """A zero-mean ±1 pattern of ``period`` pixels: ``flat`` (zeros), ``checker`` or ``stripes``."""
    if kind == "flat":
        return np.zeros(yy.shape, np.float32)
    if kind not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {kind!r}")
    half = max(1, period // 2)
    a = (yy.astype(int) // half) % 2
    if kind == "stripes":
        return (2.0 * a - 1.0).astype(np.float32)
    b = (xx.astype(int) // half) % 2
    return (2.0 * (a ^ b) - 1.0).astype(np.float32)


def _colour(value) -> np.ndarray:
    return np.asarray(DISC_COLOURS[value] if isinstance(value, str) else value, np.float32)


def generate_discs(
    out_dir: Path,
    n: int,
    image_size: int,
    rng: np.random.Generator,
    target_rgb="white",
    target_pattern: str = "flat",
    pattern_contrast: float = 100.0,
    pattern_period: int = 2,
    distractor_rgb=("red", "green", "blue"),
    distractor_pattern: str = "flat",
    phrase: str = "white disc",
    distractor_prob: float = 1.0,
    empty_fraction: float = 0.0,
    gain=(1.0, 1.0, 1.0),
    offset=(0.0, 0.0, 0.0),
) -> list[dict]:
    """The ``shapes`` scene (textured background, disc-like objects) with one target and one distractor.

    Target: a disc of mean colour ``target_rgb`` (a name of ``DISC_COLOURS`` or RGB) overlaid with
    ``target_pattern`` (``flat``, ``checker`` or ``stripes``) of amplitude ``pattern_contrast`` and
    period ``pattern_period`` pixels; distractor (with ``distractor_prob``): a disc of one of
    ``distractor_rgb`` (picked per image) with ``distractor_pattern``. Prompt ``phrase``. Two
    demo targets come from it: a *look* shift (a known word, e.g. "white disc", on a pattern
    the stand-in never saw, next to a flat disc of the same mean colour) and a *word* shift
    (the pretraining look, a word the stand-in never saw with a mask).
    """
    s = image_size
    yy, xx = _grid(s)
    looks = [(target_rgb, target_pattern)] + [(c, distractor_pattern) for c in distractor_rgb]
    patterns = {p: _pattern(p, yy, xx, pattern_period) for _, p in looks}
    empty = set(rng.permutation(n)[: round(empty_fraction * n)].tolist())
    rows = []
    for i in range(n):
        base = (120.0 + rng.uniform(-25, 25, 3)).astype(np.float32)
        img = base + 22.0 * smooth_noise(rng, (s, s), 4, 1) + 10.0 * smooth_noise(rng, (s, s), 6, 3)
        radii = list(rng.uniform(0.12, 0.22, 2) * s)
        centres, _ = _place(rng, s, radii)
        present = [i not in empty, rng.random() < distractor_prob]
        look = [looks[0], looks[1 + int(rng.integers(len(distractor_rgb)))]]
        mask = np.zeros((s, s), bool)
        for k in (1, 0):  # distractor first, target last
            disc = (yy - centres[k][0]) ** 2 + (xx - centres[k][1]) ** 2 <= radii[k] ** 2
            if not present[k]:
                continue
            rgb, pattern = look[k]
            pixels = _colour(rgb) + rng.integers(-20, 21, 3) + pattern_contrast * patterns[pattern][disc][:, None]
            img[disc] = pixels
            if k == 0:
                mask = disc
        img = img * np.asarray(gain, np.float32) + np.asarray(offset, np.float32)
        img += 3.0 * rng.standard_normal(img.shape, dtype=np.float32)
        rows.append(_write_2d(out_dir, i, img, mask, phrase))
    return rows


def generate_tissue(
    out_dir: Path,
    n: int,
    image_size: int,
    rng: np.random.Generator,
    target_rgb=(220, 200, 60),
    distractor_rgb=(40, 60, 200),
    phrase: str = "polyp",
    empty_fraction: float = 0.1,
    distractor_prob: float = 0.7,
) -> list[dict]:
    """Warm tissue, yellowish target blob, optional blue distractor, ``empty_fraction`` empty masks."""
    s = image_size
    yy, xx = _grid(s)
    vignette = 1.0 - 0.35 * (((yy - s / 2) ** 2 + (xx - s / 2) ** 2) / (s / 2) ** 2 / 2)[..., None].astype(np.float32)
    empty = set(rng.permutation(n)[: round(empty_fraction * n)].tolist())
    rows = []
    for i in range(n):
        base = (np.array([200.0, 115.0, 95.0]) + rng.uniform(-15, 15, 3)).astype(np.float32)
        blotch = smooth_noise(rng, (s, s), 6, 1) * np.array([22.0, 16.0, 14.0], np.float32) + 7.0 * smooth_noise(rng, (s, s), 12, 3)
        img = base + blotch
        shade = 1.0 + 0.06 * smooth_noise(rng, (s, s), 8, 1)
        has_target, has_distractor = i not in empty, rng.random() < distractor_prob
        radii = list(rng.uniform(0.12, 0.2, 2) * s)
        centres, scale = _place(rng, s, [1.15 * r for r in radii])  # blobs reach ~1.15 r
        radii = [r * scale for r in radii]
        mask = np.zeros((s, s), bool)
        for k, (present, rgb) in enumerate([(has_distractor, distractor_rgb), (has_target, target_rgb)]):
            if present:  # target drawn last: it is never covered
                blob = _blob(rng, yy, xx, centres[k], radii[k])
                img[blob] = (np.asarray(rgb, float) + rng.integers(-15, 16, 3)) * shade[blob]
                if k == 1:
                    mask = blob
        img *= vignette
        for _ in range(rng.integers(2, 7)):  # specular highlights
            cy, cx = rng.uniform(0, s, 2)
            r = rng.uniform(0.6, 1.8) * s / 64
            img[(yy - float(cy)) ** 2 + (xx - float(cx)) ** 2 <= r**2] = rng.uniform(240, 255)
        img += 3.0 * rng.standard_normal(img.shape, dtype=np.float32)
        rows.append(_write_2d(out_dir, i, img, mask, phrase))
    return rows


def generate_ctvolumes(
    out_dir: Path,
    n: int,
    image_size: int,
    rng: np.random.Generator,
    depth=(12, 20),
    phrase: str = "left ventricle",
) -> list[dict]:
    """Per patient an int16 (H, W, D) volume (0–1000): body ellipse on air, bright label-1
    ellipsoid spanning some slices, darker label-2 ellipsoid; uint8 label volume alongside."""
    import nibabel as nib

    s = image_size
    yy, xx = _grid(s)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    rows = []
    for i in range(1, n + 1):
        pid = f"patient{i:04d}"
        d = int(rng.integers(depth[0], depth[1] + 1))
        zz = np.arange(d, dtype=np.float32)
        body_c = s / 2 + rng.uniform(-0.03, 0.03, 2) * s
        body_r = np.array([rng.uniform(0.32, 0.40), rng.uniform(0.40, 0.46)]) * s
        taper = 1.0 - 0.1 * ((zz - d / 2) / (d / 2)) ** 2
        body = ((yy - body_c[0]) ** 2 / body_r[0] ** 2 + (xx - body_c[1]) ** 2 / body_r[1] ** 2)[..., None] <= taper**2
        vol = np.where(body, 0.45 + 0.06 * smooth_noise(rng, (s, s, d), 4)[..., 0], 0.05)
        labels = np.zeros((s, s, d), np.uint8)
        radii = list(rng.uniform(0.09, 0.15, 2) * s)
        for _ in range(1000):  # both structures well inside the body, not touching
            cs = [body_c + rng.uniform(-1, 1, 2) * (body_r * 0.8 - r - 2) for r in radii]
            if np.hypot(*(cs[0] - cs[1])) >= radii[0] + radii[1] + 2:
                break
        for label, value, c, r in [(2, 0.22, cs[1], radii[1]), (1, 0.92, cs[0], radii[0])]:
            cz, rz = rng.uniform(0.3, 0.7) * d, rng.uniform(0.15, 0.3) * d
            ell = ((yy - c[0]) ** 2 / r**2 + (xx - c[1]) ** 2 / (r * rng.uniform(0.8, 1.2)) ** 2)[..., None] + (
                (zz - cz) / rz
            ) ** 2 <= 1.0
            vol[ell] = value + 0.03 * smooth_noise(rng, (s, s, d), 3)[..., 0][ell]
            labels[ell] = label
        vol = np.round(1000.0 * (vol + 0.02 * rng.standard_normal(vol.shape, dtype=np.float32))).astype(np.int16)
        (out_dir / pid).mkdir()
        image_rel, gt_rel = f"{pid}/{pid}_ct.nii.gz", f"{pid}/{pid}_ct_gt.nii.gz"
        nib.save(nib.Nifti1Image(vol, affine), out_dir / image_rel)
        nib.save(nib.Nifti1Image(labels, affine), out_dir / gt_rel)
        rows.append({"id": pid, "image": image_rel, "mask": gt_rel, "phrase": phrase, "group": pid, "label": 1})
    return rows


GENERATORS: dict[str, Callable[..., list[dict]]] = {
    "shapes": generate_shapes,
    "discs": generate_discs,
    "tissue": generate_tissue,
    "ctvolumes": generate_ctvolumes,
}


def write_synthetic(kind: str, out_dir: Path, n: int, image_size: int, seed: int, **opts) -> None:
    """Write ``n`` samples (patients for ``ctvolumes``) of ``kind`` in raw layout to ``out_dir``.

    The folder is built atomically (replacing an existing one) and ends with
    ``samples.csv``. ``opts`` go to the generator (e.g. ``colours`` for shapes,
    ``target_rgb``/``phrase`` for tissue).
    """
    if kind not in GENERATORS:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose from {sorted(GENERATORS)}")
    if n < 1 or image_size < 32:
        raise ValueError(f"need n >= 1 and image_size >= 32, got n={n}, image_size={image_size}")
    rng = np.random.default_rng(seed)
    with atomic_dir(out_dir) as tmp:
        if kind != "ctvolumes":
            (tmp / "images").mkdir()
            (tmp / "masks").mkdir()
        rows = GENERATORS[kind](tmp, n, image_size, rng, **opts)
        with open(tmp / "samples.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS_3D if kind == "ctvolumes" else COLUMNS_2D)
            writer.writeheader()
            writer.writerows(rows)
