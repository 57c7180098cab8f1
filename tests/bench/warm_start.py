"""Print the wall time of a short CPU job as a fresh process and forked from the warm server (``tunevlseg.warm``).

    python tests/bench/warm_start.py [--jobs 4]

The job is what every demo training job does before training: import torch and transformers' CLIPSeg, build
a stand-in-sized CLIPSeg and run one forward pass. It runs ``--jobs`` times as ``python -c`` (a fresh
process, as a Snakemake job without ``TUNEVLSEG_WARM``) and ``--jobs`` times through a warm server started
for this script (its own socket in a private temporary folder, running only this job; the server's one-off
import time is printed apart).
Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def job(argv: list[str], command: str = "job") -> int:  # noqa: ARG001 (an entry point: argv unused)
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

    torch.set_num_threads(1)
    config = CLIPSegConfig(
        text_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4},
        vision_config={"hidden_size": 96, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
                       "image_size": 64, "patch_size": 8},
        projection_dim=64, reduce_dim=32, extract_layers=[1, 2, 3])
    model = CLIPSegForImageSegmentation(config).eval()
    with torch.no_grad():
        model(input_ids=torch.ones(2, 5, dtype=torch.long), pixel_values=torch.zeros(2, 3, 64, 64))
    return 0


def _env() -> dict:
    path = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    plain = [_timed([sys.executable, "-c", "from tests.bench.warm_start import job; job([])"])
             for _ in range(args.jobs)]
    with tempfile.TemporaryDirectory(prefix="warm", dir="/tmp") as folder:
        path = Path(folder) / "bench.sock"
        code = ("from pathlib import Path; from tunevlseg import warm; "
                f"warm.serve(Path({str(path)!r}), idle_s=30, entries={{'job': 'tests.bench.warm_start:job'}})")
        start = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-c", code], env=_env(), cwd=ROOT, stderr=subprocess.DEVNULL)
        from tunevlseg import warm

        while not warm._answers(path):
            time.sleep(0.05)
        ready = time.perf_counter() - start
        client = ("import sys; from pathlib import Path; from tunevlseg import warm; "
                  f"sys.exit(warm.call([], command='job', path=Path({str(path)!r})))")
        forked = [_timed([sys.executable, "-c", client]) for _ in range(args.jobs)]
        path.unlink()
        server.wait(timeout=30)
    print(f"fresh process : {statistics.mean(plain):5.2f} s per job (mean of {args.jobs})")
    print(f"warm (forked) : {statistics.mean(forked):5.2f} s per job (mean of {args.jobs}); "
          f"the server's imports once: {ready:.2f} s")
    print(f"ratio fresh/warm: {statistics.mean(plain) / statistics.mean(forked):.1f}x; "
          f"saved per job: {statistics.mean(plain) - statistics.mean(forked):.2f} s")


if __name__ == "__main__":
    main()
