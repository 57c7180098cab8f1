"""CVC-ClinicDB: 612 polyp frames (PNG) from 29 colonoscopy video sequences; split by sequence."""

from __future__ import annotations

import bisect
import csv
from pathlib import Path

from tunevlseg.data.sources.common import find_file, paired_rows
from tunevlseg.data.spec import DatasetSpec, SourceFile

# First frame of each of the 29 sequences (CVC-ClinicDB README): frames 1-25 -> 1, 26-50 -> 2, ..., 592-612 -> 29.
SEQUENCE_STARTS = (1, 26, 51, 68, 79, 104, 127, 152, 178, 200, 206, 228, 253, 278, 298, 318, 343, 364, 384, 409, 429,
                   448, 467, 479, 504, 529, 547, 572, 592)
N_FRAMES = 612


def sequence_of(frame: int) -> int:
    """The video sequence (1-29) of frame ``frame`` (1-612) by the release's frame table."""
    if not 1 <= frame <= N_FRAMES:
        raise ValueError(f"CVC-ClinicDB has frames 1-{N_FRAMES}, not {frame}")
    return bisect.bisect_right(SEQUENCE_STARTS, frame)


def _metadata_sequences(path: Path) -> dict[str, int]:
    """PNG file name -> sequence_id from the Kaggle archive's ``metadata.csv``."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        needed = {"png_image_path", "sequence_id"}
        if not needed <= set(reader.fieldnames or []):
            raise ValueError(f"CVC-ClinicDB: {path} lacks columns {sorted(needed - set(reader.fieldnames or []))}")
        try:
            return {Path(r["png_image_path"].replace("\\", "/")).name: int(float(r["sequence_id"])) for r in reader}
        except ValueError as e:
            raise ValueError(f"CVC-ClinicDB: {path}: sequence_id must be a number ({e})") from e


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """Rows for ``PNG/Original/<n>.png`` + ``PNG/Ground Truth/<n>.png``, grouped by video sequence.

    Consecutive frames of a sequence are nearly identical, so a sequence never
    spans splits: ``group`` = ``seqNN`` from ``metadata.csv`` (column
    ``sequence_id``) when the archive has it, else from the frame table
    (:data:`SEQUENCE_STARTS`). The ``TIF/`` copies are not read (Pillow cannot
    open them: RGB data tagged MinIsBlack; the PNGs hold the same pixels).
    Masks are RGB with anti-aliased grey edges: thresholded at 127.
    """
    rows = paired_rows(root, "PNG/Original", "PNG/Ground Truth", "CVC-ClinicDB", image_suffixes=(".png",),
                       phrase="polyp", id_prefix="clinicdb_", mask_rule="threshold:127")
    metadata = find_file(root, "metadata.csv", "CVC-ClinicDB", required=False)
    sequences = _metadata_sequences(metadata) if metadata else None
    for r in rows:
        name = Path(r["image"]).name
        if sequences is not None:
            if name not in sequences:
                raise ValueError(f"CVC-ClinicDB: {r['image']} is not listed in {metadata}")
            seq = sequences[name]
        else:
            try:
                seq = sequence_of(int(Path(name).stem))
            except ValueError as e:
                raise ValueError(f"CVC-ClinicDB: cannot place {r['image']} in a video sequence "
                                 f"(frame names are 1.png-{N_FRAMES}.png; no metadata.csv): {e}") from e
        r["group"] = f"seq{seq:02d}"
    return rows


SPEC = DatasetSpec(
    id="clinicdb",
    title="CVC-ClinicDB",
    access="gated",
    files=(SourceFile("archive.zip"),),
    homepage="https://www.kaggle.com/datasets/balraj98/cvcclinicdb",
    instructions=("Sign in to Kaggle, open https://www.kaggle.com/datasets/balraj98/cvcclinicdb and click "
                  "Download (or `kaggle datasets download balraj98/cvcclinicdb`); the file is archive.zip."),
    phrases="polyp",
    split_rule="seeded 80/10/10 by video sequence (29; metadata.csv sequence_id, else the README's frame table)",
    index=index,
)
