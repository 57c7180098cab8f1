"""CVC-ClinicDB: 612 polyp frames (PNG); masks thresholded at 127; seeded 80/10/10 split."""

from __future__ import annotations

from pathlib import Path

from tunevlseg.data.spec import DatasetSpec, SourceFile
from tunevlseg.data.sources.common import paired_rows


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """Rows for ``PNG/Original/<n>.png`` + ``PNG/Ground Truth/<n>.png``."""
    return paired_rows(root, "PNG/Original", "PNG/Ground Truth", "CVC-ClinicDB", image_suffixes=(".png",),
                       phrase="polyp", id_prefix="clinicdb_", mask_rule="threshold:127")


SPEC = DatasetSpec(
    id="clinicdb",
    title="CVC-ClinicDB",
    access="gated",
    files=(SourceFile("archive.zip"),),
    homepage="https://www.kaggle.com/datasets/balraj98/cvcclinicdb",
    instructions=("Sign in to Kaggle, open https://www.kaggle.com/datasets/balraj98/cvcclinicdb and click "
                  "Download (or `kaggle datasets download balraj98/cvcclinicdb`); the file is archive.zip."),
    phrases="polyp",
    split_rule="seeded 80/10/10 by image",
    index=index,
)
