"""`python -m heartmula doctor`: what a user needs to trust an install, and a verdict.

Torch version and build, each accelerator with its name, memory and a small timed
matrix product, the checkpoints found, the Intel GPU launcher variables in force, and
for each problem the fix.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

INTEL_ENV = (
    "ONEAPI_DEVICE_SELECTOR", "ZE_AFFINITY_MASK", "SYCL_CACHE_PERSISTENT", "SYCL_PI_LEVEL_ZERO_USE_IMMEDIATE_COMMANDLISTS",
    "UR_L0_USE_IMMEDIATE_COMMANDLISTS", "ZE_FLAT_DEVICE_HIERARCHY", "IPEX_XPU_ONEDNN_LAYOUT", "OMP_NUM_THREADS",
)


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # each with its fix

    def text(self) -> str:
        verdict = "OK: ready to make music" if not self.problems else f"{len(self.problems)} problem(s):"
        return "\n".join(self.lines + ["", f"Verdict: {verdict}"] + [f"  - {p}" for p in self.problems])


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _timed_matmul(dev) -> str:
    import torch

    from .accel.device import synchronize

    n = 1024 if dev.type == "cpu" else 4096
    dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    (a @ b).sum()
    synchronize(dev)
    reps = 3 if dev.type == "cpu" else 20
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    synchronize(dev)
    dt = (time.perf_counter() - t) / reps
    return f"{n}x{n} {str(dtype).replace('torch.', '')} matmul {dt * 1e3:.2f} ms ({2 * n**3 / dt / 1e12:.2f} TFLOP/s)"


def run(model_path: str | Path = "./ckpt", matmul: bool = True) -> Report:
    import platform

    import torch

    from .accel import device as devices
    from .checkpoint import find_versions

    r = Report()
    build = "CUDA " + torch.version.cuda if torch.version.cuda else ("XPU" if hasattr(torch, "xpu") and torch.xpu.is_available() else "CPU")
    r.lines.append(f"Python {platform.python_version()}, torch {torch.__version__} ({build} build)")
    for kind in devices.available_devices():
        ids = range(torch.cuda.device_count()) if kind == "cuda" else (
            range(torch.xpu.device_count()) if kind == "xpu" else [None])
        for i in ids:
            dev = torch.device(kind if i is None else f"{kind}:{i}")
            mem = devices.total_memory(dev)
            line = f"device {dev}: {devices.device_name(dev)}" + (f", {mem / 2**30:.1f} GiB" if mem else "")
            if matmul:
                try:
                    line += ", " + _timed_matmul(dev)
                except Exception as e:  # a broken driver shows here, not as a crash later
                    line += f", FAILED a matrix product: {e}"
                    r.problems.append(f"{dev} fails simple work ({e}); update the driver or run with --device cpu")
            r.lines.append(line)
    if devices.available_devices() == ["cpu"]:
        r.lines.append("no accelerator found: generation runs on the CPU and is slow")
    if "cuda" in devices.available_devices():
        if devices.triton_kernels_available(torch.device("cuda")):
            r.lines.append("Triton kernels (matrix products, top-k): on")
        else:
            r.lines.append("Triton kernels (matrix products, top-k): off (HEARTMULA_TRITON=0, no triton "
                           "package, or they failed their start-up check): generation runs ~8 % slower")
    root = Path(model_path).expanduser()
    versions = find_versions(root)
    r.lines.append(f"model folder {root}: " + ("found" if root.is_dir() else "missing"))
    for v in versions:
        p = root / f"HeartMuLa-oss-{v}"
        r.lines.append(f"  HeartMuLa-oss-{v}: {_dir_size(p) / 2**30:.2f} GiB")
    for name in ("HeartCodec-oss", "HeartTranscriptor-oss"):
        p = root / name
        r.lines.append(f"  {name}: " + (f"{_dir_size(p) / 2**30:.2f} GiB" if p.is_dir() else "missing"))
    for name in ("tokenizer.json", "gen_config.json"):
        r.lines.append(f"  {name}: " + ("found" if (root / name).is_file() else "missing"))
    if not versions or not (root / "HeartCodec-oss").is_dir() or not (root / "tokenizer.json").is_file():
        r.problems.append(
            f"checkpoints incomplete in {root}: run `python -m heartmula download --model-path {root}` "
            "(the studio works meanwhile on its demo weights, which make noise)"
        )
    if not (root / "HeartTranscriptor-oss").is_dir():
        r.lines.append("  transcription uses the English-only demo transcriber (Whisper tiny.en)")
    xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    env = {k: os.environ[k] for k in INTEL_ENV if k in os.environ}
    if env or xpu:
        r.lines.append("Intel GPU launcher variables: " + (", ".join(f"{k}={v}" for k, v in env.items()) or "none set"))
        if xpu and "SYCL_CACHE_PERSISTENT" not in env:
            r.problems.append("SYCL_CACHE_PERSISTENT is not set: kernels recompile every start; start with ./launch_ui.sh")
    return r


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check the install: torch, devices, checkpoints")
    p.add_argument("--model-path", default="./ckpt")
    p.add_argument("--no-matmul", action="store_true", help="skip the timed matrix products")
    p.set_defaults(func=lambda a: _main(a))


def _main(args) -> int:
    report = run(args.model_path, matmul=not args.no_matmul)
    print(report.text())
    return 0 if not report.problems else 1
