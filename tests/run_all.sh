#!/usr/bin/env bash
# The one test command: sets up a fresh machine by itself, then runs the whole suite.
#   bash tests/run_all.sh [pytest args...]
# Installs (when missing): Debian chromium, espeak-ng, sox and ffmpeg; a .venv with torch first (the build
# tools/torch_spec.sh picks for this hardware, as launch_ui.sh does; here the CPU wheel torch==2.13.0;
# TORCH_SPEC overrides), then requirements.txt and the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_apt+=(sox)
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)  # gradio's streaming audio (the live player)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null
# torch first and on its own (a loose "torch" would pull a multi-GB CUDA build), the build the launcher
# would pick (tools/torch_spec.sh; TORCH_SPEC overrides). An installed torch is kept, with a warning
# when it is another build than the hardware asks for: reinstalling would cost minutes on every run.
if "$VPY" -c "import torch" 2>/dev/null; then
  bash tools/torch_spec.sh --check "$VPY"
else
  bash tools/torch_spec.sh --install "$VPY"
fi
"$VPY" -m pip install -q -r requirements.txt -r tests/requirements.txt

export PYTHONUNBUFFERED=1
exec "$VPY" -m pytest -q -p no:cacheprovider "$@"
