#!/usr/bin/env bash
# The torch build for this machine, chosen in one place for launch_ui.sh and tests/run_all.sh,
# so the studio and the test command install the same thing.
#   tools/torch_spec.sh --print         print the choice (kind=, spec=, why=); installs nothing
#   tools/torch_spec.sh --install PY    print the choice, then PY -m pip install it
#   tools/torch_spec.sh --check PY      warn (stderr) when PY's installed torch is another build than
#                                       the hardware asks for; never installs, always exits 0
# The choice, first match wins:
#   TORCH_SPEC set            -> exactly that (e.g. "torch==2.13.0" or "torch --index-url URL")
#   macOS (uname -s = Darwin) -> plain "torch" (the default build, MPS included)
#   NVIDIA GPU (nvidia-smi -L lists one)                -> plain "torch" from PyPI: the CUDA build, ~6 GB
#   Intel GPU (xpu-smi, sycl-ls, or a PCI display device of vendor 0x8086) -> the XPU index
#   anything else -> the CPU index (~200 MB), or the CPU-capable pin torch==2.13.0 when that
#                    index can't be reached (offline mirrors, firewalls)
# Environment for tests and odd machines: HEARTMULA_SYSFS_ROOT (default /sys) is where PCI devices are
# read; HEARTMULA_TORCH_CPU_INDEX / HEARTMULA_TORCH_XPU_INDEX replace PyTorch's index URLs.
set -euo pipefail

SYSFS_ROOT="${HEARTMULA_SYSFS_ROOT:-/sys}"
CPU_INDEX="${HEARTMULA_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
XPU_INDEX="${HEARTMULA_TORCH_XPU_INDEX:-https://download.pytorch.org/whl/xpu}"
CPU_PIN="torch==2.13.0"  # the version CI has always tested; pip finds it on PyPI or a local mirror

have() { command -v "$1" >/dev/null 2>&1; }

# Sets KIND (cpu|cuda|xpu|default|custom) and WHY from the hardware alone, with no network:
# --check needs only this, and must stay instant on every test run.
detect_kind() {
  if [ -n "${TORCH_SPEC:-}" ]; then
    KIND=custom; WHY="TORCH_SPEC is set"; return
  fi
  if [ "$(uname -s 2>/dev/null || true)" = "Darwin" ]; then
    KIND=default; WHY="macOS: the default build (Apple GPUs through MPS)"; return
  fi
  # Each tool's output is read whole before grep: under pipefail, grep -q closing the pipe early
  # would make a tool that found a GPU look like one that failed.
  local out gpu
  if have nvidia-smi; then
    out="$(nvidia-smi -L 2>/dev/null || true)"
    if gpu="$(grep -m1 '^GPU ' <<<"$out")"; then
      KIND=cuda; WHY="NVIDIA GPU found by nvidia-smi (${gpu%% (UUID*})"; return
    fi
  fi
  if have xpu-smi; then
    out="$(xpu-smi discovery 2>/dev/null || true)"
    if grep -qi 'intel' <<<"$out"; then
      KIND=xpu; WHY="Intel GPU found by xpu-smi"; return
    fi
  fi
  if have sycl-ls; then
    out="$(sycl-ls 2>/dev/null || true)"
    if grep -q ':gpu\]' <<<"$out"; then
      KIND=xpu; WHY="Intel GPU found by sycl-ls"; return
    fi
  fi
  local dev
  for dev in "$SYSFS_ROOT"/bus/pci/devices/*; do
    [ -r "$dev/vendor" ] && [ -r "$dev/class" ] || continue
    # class 0x03xxxx is a display controller; 0x8086 is Intel
    if [ "$(cat "$dev/vendor")" = "0x8086" ] && [[ "$(cat "$dev/class")" == 0x03* ]]; then
      KIND=xpu; WHY="Intel GPU at PCI ${dev##*/}"; return
    fi
  done
  KIND=cpu; WHY="no NVIDIA or Intel GPU found"
}

# Whether a package index answers within a few seconds. DNS failures return at once; a firewall that
# drops packets costs at most the timeout, and only when torch is about to be installed.
reachable() {
  "${PYTHON:-python3}" - "$1/torch/" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=5).close()
EOF
}

# Sets SPEC (the pip arguments) for KIND, and adds to WHY the size of what it installs.
choose_spec() {
  detect_kind
  case "$KIND" in
    custom) SPEC="$TORCH_SPEC" ;;
    default) SPEC="torch" ;;
    cuda) SPEC="torch"; WHY="$WHY: the CUDA build from PyPI, ~6 GB with its nvidia wheels" ;;
    xpu) SPEC="torch --index-url $XPU_INDEX"; WHY="$WHY: the XPU build" ;;
    cpu)
      if reachable "$CPU_INDEX"; then
        SPEC="torch --index-url $CPU_INDEX"; WHY="$WHY: the CPU build (~200 MB) from $CPU_INDEX"
      else
        SPEC="$CPU_PIN"; WHY="$WHY: the CPU build (~200 MB) as $CPU_PIN ($CPU_INDEX can't be reached)"
      fi ;;
  esac
}

# The build of the torch that $1 imports: cuda, xpu, rocm, cpu, or none (not installed).
installed_build() {
  "$1" - <<'EOF' 2>/dev/null || echo none
import torch
v = torch.version
print("cuda" if v.cuda else "xpu" if getattr(v, "xpu", None) else "rocm" if getattr(v, "hip", None) else "cpu")
EOF
}

case "${1:-}" in
  --print)
    choose_spec
    printf 'kind=%s\nspec=%s\nwhy=%s\n' "$KIND" "$SPEC" "$WHY"
    ;;
  --install)
    [ -n "${2:-}" ] || { echo "usage: $0 --install PYTHON" >&2; exit 2; }
    choose_spec
    echo "torch: installing '$SPEC' ($WHY); set TORCH_SPEC to choose another"
    # shellcheck disable=SC2086  # SPEC is several pip arguments
    "$2" -m pip install -q $SPEC
    ;;
  --check)
    [ -n "${2:-}" ] || { echo "usage: $0 --check PYTHON" >&2; exit 2; }
    detect_kind
    have_build="$(installed_build "$2")"
    case "$KIND" in custom | default) want="" ;; *) want="$KIND" ;; esac
    if [ -n "$want" ] && [ "$have_build" != none ] && [ "$have_build" != "$want" ]; then
      echo "warning: the installed torch is the $have_build build, but this machine asks for the $want build" \
        "($WHY). Keeping it; to switch: $2 -m pip uninstall -y torch && $0 --install $2" >&2
    fi
    ;;
  *)
    echo "usage: $0 --print | --install PYTHON | --check PYTHON" >&2
    exit 2
    ;;
esac
