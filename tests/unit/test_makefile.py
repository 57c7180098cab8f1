"""`make setup`'s plan (make -n, nothing run): torch from pip before anything else, the rest through uv with
pip as the fallback (or pip alone with INSTALLER=pip), no bytecode compiled by the installers, then once."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")


def plan(tmp_path, *overrides) -> list[str]:
    venv = tmp_path / "venv"  # not created: make -n only prints the recipe
    out = subprocess.run(["make", "-n", "-B", "setup", f"VENV={venv}", *overrides], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if " install " in line or "compileall" in line]


def test_torch_comes_from_pip_first_and_the_rest_through_uv_with_a_pip_fallback(tmp_path):
    lines = plan(tmp_path)
    torch = next(i for i, line in enumerate(lines) if '"torch==2.13.0"' in line and "-r requirements" not in line)
    assert "-m pip install" in lines[torch] and "uv" not in lines[torch]
    assert all(" uv pip install" not in line for line in lines[:torch])
    requirements = [line for line in lines if "-r requirements.txt" in line]
    assert len(requirements) == 1
    uv_part, pip_part = requirements[0].split("||")
    assert "-m uv pip install" in uv_part and "-m pip install" in pip_part and "uv failed" in pip_part
    assert all("--no-compile" in line for line in lines if "-m pip install" in line)
    assert "compileall" in lines[-1] and "-j 0" in lines[-1]


def test_installer_pip_never_calls_uv(tmp_path):
    lines = plan(tmp_path, "INSTALLER=pip")
    assert lines and not any(" -m uv " in line or '"uv==' in line for line in lines)
    assert sum("-r requirements.txt" in line for line in lines) == 1


def test_a_gpu_index_reaches_only_the_torch_install(tmp_path):
    index = "https://download.pytorch.org/whl/cu126"
    lines = plan(tmp_path, f"TORCH_INDEX={index}")
    assert [line for line in lines if index in line] == [next(line for line in lines if '"torch==2.13.0" --index' in line)]


@pytest.mark.parametrize("overrides, flag", [((), "TUNEVLSEG_WARM=1"), (("WARM=0",), "TUNEVLSEG_WARM=0")])
def test_the_demo_runs_snakemake_with_the_warm_start_unless_turned_off(tmp_path, overrides, flag):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / ".installed").touch()  # set-up done: make -n prints only the demo's own lines
    out = subprocess.run(["make", "-n", "demo", f"VENV={venv}", *overrides], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    runs = [line for line in out.splitlines() if "/snakemake --cores" in line]
    assert len(runs) == 1 and runs[0].startswith(f"{flag} "), out
