"""tools/torch_spec.sh: the torch build launch_ui.sh and tests/run_all.sh install, per hardware.

The hardware is faked the way the script sees it: `nvidia-smi`, `xpu-smi`, `sycl-ls` and `uname`
scripts first on PATH, a PCI tree under HEARTMULA_SYSFS_ROOT, and the CPU index pointed at a
local HTTP server (reachable) or a closed port (not). The script runs for real in its --print
and --check modes, which never install.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "torch_spec.sh"
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, so the connection is refused at once


def _fake(bin_dir: Path, name: str, stdout: str, rc: int = 0) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\nexit {rc}\n")
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path):
    """A machine with no GPU, running Linux, with the CPU index out of reach; tests add hardware."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake(bin_dir, "uname", "Linux")
    sysfs = tmp_path / "sys"
    (sysfs / "bus" / "pci" / "devices").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("TORCH_SPEC",)}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", HEARTMULA_SYSFS_ROOT=str(sysfs),
               HEARTMULA_TORCH_CPU_INDEX=CLOSED, PYTHON=sys.executable)
    return type("Machine", (), {"bin": bin_dir, "sysfs": sysfs, "env": env})


def _pci(machine, slot: str, vendor: str, cls: str) -> None:
    dev = machine.sysfs / "bus" / "pci" / "devices" / slot
    dev.mkdir()
    (dev / "vendor").write_text(vendor + "\n")
    (dev / "class").write_text(cls + "\n")


def choice(machine) -> dict[str, str]:
    out = subprocess.run(["bash", str(SCRIPT), "--print"], env=machine.env, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


def test_no_gpu_and_no_cpu_index_falls_back_to_the_pinned_cpu_wheel(machine):
    c = choice(machine)
    assert (c["kind"], c["spec"]) == ("cpu", "torch==2.13.0")
    assert "can't be reached" in c["why"] and "~200 MB" in c["why"]


def test_no_gpu_with_a_reachable_cpu_index_uses_it(machine, tmp_path):
    (tmp_path / "index" / "torch").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "index"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        machine.env["HEARTMULA_TORCH_CPU_INDEX"] = url
        c = choice(machine)
    finally:
        server.shutdown()
    assert (c["kind"], c["spec"]) == ("cpu", f"torch --index-url {url}")


def test_nvidia_gpu_gets_the_cuda_build(machine):
    _fake(machine.bin, "nvidia-smi", "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)")
    _pci(machine, "0000:00:02.0", "0x8086", "0x030000")  # an Intel iGPU beside it: the NVIDIA card wins
    c = choice(machine)
    assert (c["kind"], c["spec"]) == ("cuda", "torch")
    assert "NVIDIA H100 80GB HBM3" in c["why"] and "~6 GB" in c["why"]


def test_nvidia_smi_without_a_gpu_is_not_a_gpu(machine):
    # The driver tools installed but no card (or a broken driver): nvidia-smi fails and lists nothing.
    _fake(machine.bin, "nvidia-smi", "NVIDIA-SMI has failed because it couldn't communicate with the driver", rc=9)
    assert choice(machine)["kind"] == "cpu"


def test_intel_gpu_found_by_xpu_smi_gets_the_xpu_build(machine):
    _fake(machine.bin, "xpu-smi", "| 0 | Device Name: Intel(R) Data Center GPU Max 1550 |")
    c = choice(machine)
    assert (c["kind"], c["spec"]) == ("xpu", "torch --index-url https://download.pytorch.org/whl/xpu")
    assert "xpu-smi" in c["why"]


def test_sycl_ls_counts_only_gpus(machine):
    _fake(machine.bin, "sycl-ls", "[opencl:cpu][opencl:0] Intel(R) OpenCL, Intel(R) Xeon(R)")
    assert choice(machine)["kind"] == "cpu"
    _fake(machine.bin, "sycl-ls", "[level_zero:gpu][level_zero:0] Intel(R) oneAPI Unified Runtime, Intel(R) Arc(TM) A770")
    assert choice(machine)["kind"] == "xpu"


def test_intel_display_device_in_sysfs_gets_the_xpu_build(machine):
    _pci(machine, "0000:00:1f.0", "0x8086", "0x060100")  # an Intel ISA bridge: not a GPU
    _pci(machine, "0000:01:00.0", "0x10de", "0x030200")  # an NVIDIA card without its driver: not Intel
    assert choice(machine)["kind"] == "cpu"
    _pci(machine, "0000:03:00.0", "0x8086", "0x030000")
    c = choice(machine)
    assert c["kind"] == "xpu" and "0000:03:00.0" in c["why"]


def test_macos_gets_the_default_build_even_with_other_tools_present(machine):
    _fake(machine.bin, "uname", "Darwin")
    _fake(machine.bin, "nvidia-smi", "GPU 0: NVIDIA Something (UUID: GPU-1)")
    assert choice(machine) == {"kind": "default", "spec": "torch",
                               "why": "macOS: the default build (Apple GPUs through MPS)"}


def test_torch_spec_overrides_everything(machine):
    _fake(machine.bin, "nvidia-smi", "GPU 0: NVIDIA H100 (UUID: GPU-1)")
    machine.env["TORCH_SPEC"] = "torch==2.5.1 --index-url https://example.invalid/whl"
    c = choice(machine)
    assert (c["kind"], c["spec"]) == ("custom", "torch==2.5.1 --index-url https://example.invalid/whl")


def _check(machine) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--check", sys.executable], env=machine.env, capture_output=True,
                          text=True, timeout=60)


def test_check_warns_when_the_installed_build_is_not_the_one_the_hardware_asks_for(machine):
    import torch

    installed = "cuda" if torch.version.cuda else "xpu" if getattr(torch.version, "xpu", None) else "cpu"
    # This interpreter's torch is the build the faked hardware asks for: no warning.
    if installed == "cuda":
        _fake(machine.bin, "nvidia-smi", "GPU 0: NVIDIA H100 (UUID: GPU-1)")
    elif installed == "xpu":
        _pci(machine, "0000:03:00.0", "0x8086", "0x030000")
    same = _check(machine)
    assert same.returncode == 0 and same.stderr == ""
    # Then hardware that asks for another build: a warning naming both, and still exit 0 (no reinstall).
    for tool in ("nvidia-smi",):
        (machine.bin / tool).unlink(missing_ok=True)
    for dev in (machine.sysfs / "bus" / "pci" / "devices").iterdir():
        for f in dev.iterdir():
            f.unlink()
        dev.rmdir()
    if installed == "cpu":
        _fake(machine.bin, "nvidia-smi", "GPU 0: NVIDIA H100 (UUID: GPU-1)")
        want = "cuda"
    else:
        want = "cpu"
    other = _check(machine)
    assert other.returncode == 0
    assert f"the installed torch is the {installed} build" in other.stderr
    assert f"asks for the {want} build" in other.stderr and "--install" in other.stderr
