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


TORCH_INDEX = "https://download.pytorch.org/whl"


def _nvidia_gpu() -> str | None:
    """The first GPU `nvidia-smi -L` lists ('GPU 0: NVIDIA H100 ...'), or None. Asked of the
    driver, not of torch: a CPU build of torch sees no GPU even where one is."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = [line.split(" (UUID")[0] for line in out.splitlines() if line.startswith("GPU ")]
    return gpus[0] if gpus else None


def _intel_gpu() -> str | None:
    """Where an Intel GPU shows without the XPU build of torch: xpu-smi, sycl-ls, or a PCI display
    device (class 0x03xxxx) of vendor 0x8086 (the same tests as tools/torch_spec.sh)."""
    import shutil
    import subprocess

    for cmd, found in ((["xpu-smi", "discovery"], lambda out: "intel" in out.lower()),
                       (["sycl-ls"], lambda out: ":gpu]" in out)):
        if shutil.which(cmd[0]) is None:
            continue
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if found(out):
            return f"Intel GPU (found by {cmd[0]})"
    root = Path(os.environ.get("HEARTMULA_SYSFS_ROOT", "/sys")) / "bus" / "pci" / "devices"
    for dev in sorted(root.glob("*")) if root.is_dir() else []:
        try:
            vendor, cls = (dev / "vendor").read_text().strip(), (dev / "class").read_text().strip()
        except OSError:
            continue
        if vendor == "0x8086" and cls.startswith("0x03"):
            return f"Intel GPU at PCI {dev.name}"
    return None


def _install_line(build: str) -> str:
    """The one command that puts the `build` ('cuda', 'xpu' or 'cpu') of torch into this Python."""
    import sys

    index = {"cuda": "", "xpu": f" --index-url {TORCH_INDEX}/xpu", "cpu": f" --index-url {TORCH_INDEX}/cpu"}[build]
    return f"{sys.executable} -m pip install --force-reinstall torch{index}"


def _build_problems(torch) -> list[str]:
    """The torch build against the hardware: a CUDA build with no NVIDIA GPU (~6 GB for nothing), a
    build without CUDA beside an NVIDIA GPU, a build without XPU on an Intel GPU machine; each with
    its fix. The choice matches tools/torch_spec.sh: NVIDIA first, then Intel, then the CPU build."""
    import platform

    if platform.system() == "Darwin":  # one build there; nothing to get wrong
        return []
    nvidia, intel = _nvidia_gpu(), _intel_gpu()
    has_cuda, has_xpu = bool(torch.version.cuda), bool(getattr(torch.version, "xpu", None))
    if nvidia and not has_cuda:
        return [f"{nvidia} is here, but torch {torch.__version__} is not the CUDA build, so it runs on the CPU; "
                f"install the CUDA build (~6 GB): `{_install_line('cuda')}`"]
    if has_cuda and not nvidia:
        want = "xpu" if intel else "cpu"
        what = f"{intel}: install the XPU build" if intel else "install the CPU build (~200 MB)"
        return [f"torch {torch.__version__} is the CUDA build (~6 GB), but nvidia-smi lists no NVIDIA GPU; "
                f"{what}: `{_install_line(want)}`"]
    if intel and not nvidia and not has_xpu:
        return [f"{intel}, but torch {torch.__version__} is not the XPU build, so it cannot use it; "
                f"install the XPU build: `{_install_line('xpu')}`"]
    return []


def _missing_pieces(root: Path, version: str) -> list[str]:
    """Every folder and file of `version`'s official layout absent under `root`, by path relative
    to it (folder names end in /); empty when all is there."""
    from .checkpoint import CheckpointError, weight_files

    missing = []
    for folder in (f"HeartMuLa-oss-{version}", "HeartCodec-oss"):
        if not (root / folder).is_dir():
            missing.append(f"{folder}/")
            continue
        if not (root / folder / "config.json").is_file():
            missing.append(f"{folder}/config.json")
        try:
            weight_files(root / folder)
        except CheckpointError as e:  # no safetensors, pickles only, or shards the index names
            missing.append(f"{folder}/model*.safetensors ({str(e).replace(str(root / folder), folder)})")
    missing += [name for name in ("tokenizer.json", "gen_config.json") if not (root / name).is_file()]
    return missing


def run(model_path: str | Path = "./ckpt", matmul: bool = True, version: str = "3B") -> Report:
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
    r.problems += _build_problems(torch)
    root = Path(model_path).expanduser()
    versions = find_versions(root)
    r.lines.append(f"model folder {root}: " + ("found" if root.is_dir() else "missing") + f"; version {version}")
    for v in versions:
        p = root / f"HeartMuLa-oss-{v}"
        r.lines.append(f"  HeartMuLa-oss-{v}: {_dir_size(p) / 2**30:.2f} GiB")
    for name in ("HeartCodec-oss", "HeartTranscriptor-oss"):
        p = root / name
        r.lines.append(f"  {name}: " + (f"{_dir_size(p) / 2**30:.2f} GiB" if p.is_dir() else "missing"))
    for name in ("tokenizer.json", "gen_config.json"):
        r.lines.append(f"  {name}: " + ("found" if (root / name).is_file() else "missing"))
    missing = _missing_pieces(root, version) if root.is_dir() else [f"{root}/ (the model folder itself)"]
    if missing:
        others = [v for v in versions if v != version]
        also = f" (found version {', '.join(others)}: pass --version {others[0]})" if others else ""
        r.problems.append(
            f"checkpoints of version {version} incomplete in {root}, missing: {', '.join(missing)}{also}; "
            f"run `python -m heartmula download --model-path {root}` "
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
    p.add_argument("--model-path", default="./ckpt", help="the checkpoint folder to check")
    p.add_argument("--version", default="3B", help="HeartMuLa version to check: the X of HeartMuLa-oss-X")
    p.add_argument("--no-matmul", action="store_true", help="skip the timed matrix products")
    p.set_defaults(func=lambda a: _main(a))


def _main(args) -> int:
    report = run(args.model_path, matmul=not args.no_matmul, version=args.version)
    print(report.text())
    return 0 if not report.problems else 1
