#!/usr/bin/env bash
# The GPU check (tests/gpu/check.py) in a fresh virtual environment with the CUDA build of torch.
#
#   tests/gpu/check.sh [--index-url URL] [--torch 2.13.0] [--venv DIR] [--reuse] [-- CHECK.PY ARGS]
#
# --index-url  where the torch wheel comes from. Default: pip's configured index (PyPI: its Linux x86_64
#              torch wheels are CUDA 12 builds). Or e.g. https://download.pytorch.org/whl/cu126.
# --torch      the pinned torch version (default: the Makefile's 2.13.0).
# --venv       where to create the environment (default: $TMPDIR/tunevlseg-gpu-venv); --reuse keeps an
#              existing one (no installation).
# Arguments after -- go to check.py (default: --device cuda --steps 20). The check itself is bounded by
# 8 minutes (timeout); installing takes what the index takes. In CI: tests/gpu/test_check.py
# runs check.py on the CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
INDEX=""
TORCH=2.13.0
VENV="${TMPDIR:-/tmp}/tunevlseg-gpu-venv"
REUSE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --index-url) INDEX="$2"; shift 2 ;;
    --torch) TORCH="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --reuse) REUSE=1; shift ;;
    --) shift; break ;;
    *) echo "check.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
ARGS=("$@")
[[ ${#ARGS[@]} -gt 0 ]] || ARGS=(--device cuda --steps 20)
PY="$VENV/bin/python"
if [[ $REUSE -eq 0 || ! -x $PY ]]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "torch==$TORCH" ${INDEX:+--index-url "$INDEX"}
  # the rest from the default index; torch pinned so that nothing replaces the CUDA build
  "$PY" -m pip install -q -r requirements.txt "torch==$TORCH"
  "$PY" -m pip install -q --no-deps -e .
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "available:", torch.cuda.is_available())'
exec timeout -k 10 480 "$PY" tests/gpu/check.py "${ARGS[@]}"
