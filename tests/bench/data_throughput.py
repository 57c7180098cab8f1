"""Preprocessing throughput (images/s) on a Kvasir-layout fixture of a few thousand images (and the share
of the content-hash pre-pass that groups duplicates before the split), and the cache's read throughput
against decoding the same images from PNG files.

Prints figures; asserts nothing. Run from the repository root:
    .venv/bin/python tests/bench/data_throughput.py [--n 3000] [--size 352] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests import data_fixtures  # noqa: E402
from tunevlseg.data.cache import PreparedSplit  # noqa: E402
from tunevlseg.data.ingest import index_dataset, obtain, prepare_settings  # noqa: E402
from tunevlseg.data.prepare import _hash_task, _runs, prepare_dataset, read_samples  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="images in the fixture")
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--height", type=int, default=288, help="Kvasir/ClinicDB-like frame size")
    ap.add_argument("--size", type=int, default=352, help="cache size (352 CLIPSeg, 416 CRIS)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    args = ap.parse_args()

    data_fixtures.W, data_fixtures.H = args.width, args.height
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        fx = data_fixtures.build_kvasir(tmp / "raw" / "kvasir-drop", n=args.n)
        print(f"fixture: {args.n} JPEG images + JPEG masks {args.width}x{args.height} "
              f"({fx.archives[0].stat().st_size / 2**20:.0f} MiB zip) built in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        info = obtain("kvasir", tmp / "raw", archive=str(fx.archives[0]))
        t_obtain = time.perf_counter() - t
        t = time.perf_counter()
        index_dataset("kvasir", info["root"], tmp / "index")
        print(f"obtain (sha256 + safe extraction): {t_obtain:.1f} s; index: {time.perf_counter() - t:.2f} s")

        settings = prepare_settings({"source": "kvasir"})
        for workers in sorted(set(args.workers)):
            t = time.perf_counter()
            meta = prepare_dataset(tmp / "index", tmp / f"prep{workers}", size=args.size, workers=workers, **settings)
            dt = time.perf_counter() - t
            n = sum(meta["split_sizes"].values())
            pre = [(tmp / "index", run, {"seed": 0, "window": None, "empty_fraction": 0.1})
                   for _, run in _runs([("", r) for r in read_samples(tmp / "index")])]
            t = time.perf_counter()
            if workers > 1:
                import multiprocessing

                with multiprocessing.get_context("spawn").Pool(workers) as pool:
                    t = time.perf_counter()  # the pool start is shared with the main pass in prepare
                    list(pool.imap(_hash_task, pre, chunksize=8))
            else:
                list(map(_hash_task, pre))
            t_pre = time.perf_counter() - t
            print(f"prepare at {args.size}px, {workers} worker(s): {n} images in {dt:.1f} s = {n / dt:.0f} images/s "
                  f"(of which the hashing pre-pass: {t_pre:.1f} s = {100 * t_pre / dt:.0f} %)")

        split = PreparedSplit(tmp / f"prep{min(args.workers)}", "train")
        png_dir = tmp / "png"
        png_dir.mkdir()
        count = min(len(split), 1000)
        for i in range(count):
            Image.fromarray(np.asarray(split.images[i])).save(png_dir / f"{i}.png", compress_level=1)
        t = time.perf_counter()
        checksum = 0
        for i in range(count):
            checksum += int(np.asarray(Image.open(png_dir / f"{i}.png").convert("RGB"))[0, 0, 0])
        t_png = time.perf_counter() - t
        fresh = PreparedSplit(tmp / f"prep{min(args.workers)}", "train")  # cold maps
        t = time.perf_counter()
        for i in range(count):
            checksum += int(np.array(fresh.images[i])[0, 0, 0])
        t_cache = time.perf_counter() - t
        print(f"read {count} {args.size}px images: PNG decode {count / t_png:.0f} images/s, "
              f"memory-mapped cache {count / t_cache:.0f} images/s ({t_png / t_cache:.0f}x faster)")


if __name__ == "__main__":
    main()
