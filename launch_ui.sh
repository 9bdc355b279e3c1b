#!/usr/bin/env bash
# Start HeartMuLa Studio:  ./launch_ui.sh [--model-path ./ckpt] [--host 127.0.0.1] [--port 7860] [--auth user:pass] ...
# First run creates .venv: torch on its own first (TORCH_SPEC, e.g. the XPU or CUDA wheel index), then
# requirements.txt. Then the launcher environment for Intel GPUs and CPU threads, and app.py.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x .venv/bin/python ]; then
  echo "first run: creating .venv (torch first, then requirements.txt)"
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # A bare "torch" from PyPI is the multi-GB CUDA build on Linux; pick yours, e.g.
  #   TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/xpu" ./launch_ui.sh   (Intel GPU)
  #   TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu" ./launch_ui.sh   (CPU only)
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install ${TORCH_SPEC:-torch}
  .venv/bin/python -m pip install -r requirements.txt
fi

# Intel GPUs (harmless elsewhere): keep compiled kernels between runs, immediate command lists,
# and every tile as its own device.
export SYCL_CACHE_PERSISTENT="${SYCL_CACHE_PERSISTENT:-1}"
export UR_L0_USE_IMMEDIATE_COMMANDLISTS="${UR_L0_USE_IMMEDIATE_COMMANDLISTS:-1}"
export SYCL_PI_LEVEL_ZERO_USE_IMMEDIATE_COMMANDLISTS="${SYCL_PI_LEVEL_ZERO_USE_IMMEDIATE_COMMANDLISTS:-1}"
export ZE_FLAT_DEVICE_HIERARCHY="${ZE_FLAT_DEVICE_HIERARCHY:-FLAT}"
# CPU threads: one per core unless set already.
NPROC="$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 4)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$NPROC}"
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"
export GRADIO_ANALYTICS_ENABLED="${GRADIO_ANALYTICS_ENABLED:-False}"
export PYTHONUNBUFFERED=1

exec .venv/bin/python app.py "$@"
