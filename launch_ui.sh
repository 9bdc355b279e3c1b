#!/usr/bin/env bash
# Start HeartMuLa Studio:  ./launch_ui.sh [--model-path ./ckpt] [--host 127.0.0.1] [--port 7860] [--auth user:pass] ...
# First run creates .venv: torch on its own first (the build tools/torch_spec.sh picks for this
# hardware, or TORCH_SPEC), then requirements.txt. Then the launcher environment for Intel GPUs and CPU threads, and app.py.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x .venv/bin/python ]; then
  echo "first run: creating .venv (torch first, then requirements.txt)"
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # The build for this hardware (CUDA, XPU, CPU or macOS's default), chosen by the same script as
  # the test command's; TORCH_SPEC overrides it. It prints what it chose and why.
  bash tools/torch_spec.sh --install .venv/bin/python
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
