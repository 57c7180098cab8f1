"""BKAI-IGH NeoPolyp: 1000 training images; RGB masks, polyp = red (neoplastic) ∪ green (non-neoplastic)."""

from __future__ import annotations

from pathlib import Path

from tunevlseg.data.spec import DatasetSpec, SourceFile
from tunevlseg.data.sources.common import paired_rows


def index(root: Path, out: Path, workers: int = 1) -> list[dict]:
    """Rows for ``train/train/<id>.jpeg`` + ``train_gt/train_gt/<id>.jpeg`` (the test set has no masks).

    Masks are noisy RGB JPEGs (heights 959-1024) with red = neoplastic and
    green = non-neoplastic, some with both: the polyp is red ∪ green, a
    channel > 127 counts, so compression fringes do not add a third colour.
    A few training images are pixel-identical copies: ``prepare`` groups them.
    """
    return paired_rows(root, "train/train", "train_gt/train_gt", "BKAI-IGH NeoPolyp",
                       image_suffixes=(".jpeg", ".jpg", ".png"), phrase="polyp", id_prefix="bkai_",
                       mask_rule="channels:127:0,1")


SPEC = DatasetSpec(
    id="bkai",
    title="BKAI-IGH NeoPolyp",
    access="gated",
    files=(SourceFile("bkai-igh-neopolyp.zip"),),
    homepage="https://www.kaggle.com/competitions/bkai-igh-neopolyp/data",
    instructions=("Sign in to Kaggle, accept the competition rules at "
                  "https://www.kaggle.com/competitions/bkai-igh-neopolyp/rules, then "
                  "`kaggle competitions download -c bkai-igh-neopolyp` (file bkai-igh-neopolyp.zip)."),
    phrases="polyp",
    split_rule="seeded 80/10/10 by image (the official test set has no masks)",
    index=index,
)
