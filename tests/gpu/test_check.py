"""The GPU check script keeps working without a GPU: its Python part on the CPU (tiny models, seconds)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.gpu import check
from tunevlseg.models.registry import REGISTRY, supported_methods

SCRIPT = Path(check.__file__)


def test_check_runs_every_pair_on_the_cpu():
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--steps", "2", "--tiny"],
                          capture_output=True, text=True, timeout=300)  # three models
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    table = {(r[0], r[1]): r for r in rows if len(r) == 10 and r[0] in REGISTRY}
    expected = {(m, k) for m in REGISTRY for k in supported_methods(m)}
    assert set(table) == expected
    assert all(r[-1] == "ok" for r in table.values())
    assert float(table[("clipseg", "coop")][3]) > 0  # cached img/s measured for a frozen-image-side method
    assert table[("clipseg", "vpt")][3] == "nan"  # not for a vision-prompt method
    assert done.stdout.rstrip().endswith("all checks passed")


def test_a_logits_mismatch_fails_the_check(monkeypatch, capsys):
    monkeypatch.setattr(check, "FP32_TOL", -1.0)  # no error is small enough
    assert check.main(["--device", "cpu", "--steps", "1", "--tiny", "--models", "cris"]) == 1
    assert "FAILED: cris·zeroshot" in capsys.readouterr().out


def test_asking_for_cuda_without_one_says_so(capsys):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert check.main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
