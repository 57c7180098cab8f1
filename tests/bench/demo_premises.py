"""Print the premises of the demo's 2-D targets, measured on a pretrained CLIPSeg stand-in.

    python tests/bench/demo_premises.py [STANDIN_DIR] [--n 60]

STANDIN_DIR defaults to results/pretrained/clipseg-standin (written by `make demo` or
`snakemake --until pretrain_standin`). The targets are generated from config.yaml's
``newlook`` and ``newword`` settings (``n`` images each, in a temporary folder) and segmented
zero-shot with the known word and with the target's own phrase:

- newword images (the pretraining look) + "white disc." (known word): high — the look is known;
- newword images + "lesion." (its phrase): low — only the word is new;
- newlook images + "white disc." (its phrase): low — only the look is new.

Figures only (mean Dice at threshold 0.5): nothing is asserted.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from tunevlseg.data.synthetic import write_synthetic
from tunevlseg.models.registry import load_adapter
from tunevlseg.train.metrics import dice_iou

ROOT = Path(__file__).resolve().parents[2]


def load(folder: Path):
    with open(folder / "samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images = np.stack([np.asarray(Image.open(folder / r["image"]).convert("RGB")) for r in rows])
    masks = np.stack([np.asarray(Image.open(folder / r["mask"])) > 0 for r in rows])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(masks)[:, None]


@torch.no_grad()
def zero_shot(adapter, images, masks, prompt: str) -> float:
    logits = adapter(images, adapter.tokenize([prompt] * len(images)))
    return float(dice_iou(torch.sigmoid(logits) > 0.5, masks)[0].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("standin", nargs="?", default=str(ROOT / "results/pretrained/clipseg-standin"))
    parser.add_argument("--n", type=int, default=60)
    args = parser.parse_args()
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    size = config["models"]["clipseg"]["image_size"]
    adapter = load_adapter("clipseg", args.standin, {"image_size": size}).eval()
    with tempfile.TemporaryDirectory() as tmp:
        data = {}
        for name in ("newword", "newlook"):
            opts = dict(config["datasets"][name]["synthetic"])
            kind, seed = opts.pop("kind"), opts.pop("seed", 0)
            opts.pop("n")
            write_synthetic(kind, Path(tmp) / name, args.n, size, seed, **opts)
            data[name] = (load(Path(tmp) / name), opts["phrase"])
    (word_images, word_masks), word = data["newword"]
    (look_images, look_masks), look = data["newlook"]
    print(f"stand-in {args.standin}, {args.n} images per target, zero-shot Dice (threshold 0.5):")
    print(f"  newword look + known word  {look!r:14s} {zero_shot(adapter, word_images, word_masks, look + '.'):.3f}"
          "   (premise: high)")
    print(f"  newword look + its word    {word!r:14s} {zero_shot(adapter, word_images, word_masks, word + '.'):.3f}"
          "   (premise: low)")
    print(f"  newlook look + its word    {look!r:14s} {zero_shot(adapter, look_images, look_masks, look + '.'):.3f}"
          "   (premise: low)")


if __name__ == "__main__":
    main()
