"""One device layer for XPU, CUDA, MPS and CPU.

`torch.accelerator.*` raises when no accelerator exists and `torch.xpu.*` raises on
builds without XPU, so every helper here checks the backend first and is a harmless
no-op on the CPU.
"""

from __future__ import annotations

import argparse
import os
import threading

import torch

PREFERENCE = ("xpu", "cuda", "mps", "cpu")


def _backend_available(kind: str) -> bool:
    if kind == "cpu":
        return True
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "xpu":
        return hasattr(torch, "xpu") and torch.xpu.is_available()
    if kind == "mps":
        return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    return False


def available_devices() -> list[str]:
    """The backends usable in this process, best first (always ends with 'cpu')."""
    return [k for k in PREFERENCE if _backend_available(k)]


_TRITON_OK: dict[str, bool] = {}  # device type -> the probe's verdict, once per process


def triton_kernels_available(device: torch.device) -> bool:
    """Where our Triton kernels (gemv.py, draw.py, attention.py) run: CUDA with Triton installed, or the
    CPU under TRITON_INTERPRET=1 (tests). HEARTMULA_TRITON=0 turns them off (torch paths)."""
    import importlib.util
    import os

    if os.environ.get("HEARTMULA_TRITON", "1") == "0" or importlib.util.find_spec("triton") is None:
        return False
    if not (device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")):
        return False
    if device.type not in _TRITON_OK:
        _TRITON_OK[device.type] = _probe_triton(torch.device(device.type))
    return _TRITON_OK[device.type]


def _probe_triton(device: torch.device) -> bool:
    """Build and run the kernels once on tiny inputs. Triton compiles with the machine's C
    compiler and the card's toolchain; where that fails, generation falls back to torch's
    own products and sampling with a warning instead of failing the first song."""
    import logging

    from . import attention, draw, gemv

    try:
        x, w, s = (torch.randn(*shape, device=device) for shape in ((2, 64), (24, 64), (2, 100)))
        cfg, temperature, top1 = (torch.tensor(v, device=device) for v in (1.5, 1.0, 1))
        seeds, pos = torch.tensor([1], device=device), torch.tensor([2], device=device)
        best = (s[1] + (s[0] - s[1]) * cfg).argmax()  # what top-k 1 must draw for both rows
        ok = torch.allclose(gemv.matvec(x, w), x @ w.T, rtol=1e-3, atol=1e-3) and torch.equal(
            draw.draw_codes(s, cfg, temperature, top1, seeds, pos, 8, 1, True), best.repeat(2))
        q, kv = (torch.randn(*shape, device=device, dtype=torch.float16) for shape in ((1, 1, 2, 16), (1, 1, 8, 16)))
        at3 = kv[0, 0, :4].float()  # position 3 attends to keys 0..3
        want = torch.softmax(q[0, 0].float() @ at3.T / 4, -1) @ at3
        got = attention.decode_attention(q, kv, kv, torch.tensor([3], device=device), 8)
        ok = ok and torch.allclose(got.view(2, 16).float(), want, rtol=1e-2, atol=1e-2)
        # the same step from its projection: RoPE at angle 0 (no rotation) and the cache write
        qkv = torch.cat([q.flatten(), kv[0, 0, 3], kv[0, 0, 3]]).view(1, 1, 64)
        rope = torch.tensor([1.0, 0.0], device=device).expand(1, 8, 2)
        cache = (kv.clone(), kv.clone())
        got = attention.decode_step(qkv, rope, torch.tensor([3], device=device), *cache, 8, 2)
        ok = ok and torch.allclose(got.view(2, 16).float(), want, rtol=1e-2, atol=1e-2)
        why = "they computed wrong results"
    except Exception as e:  # a missing compiler, an unsupported card, a broken install: all fall back
        ok, why = False, f"{type(e).__name__}: {e}"
    if not ok:
        logging.getLogger("heartmula").warning(
            "Triton kernels are off on %s (%s); generation uses torch's own products and sampling, ~8 %% slower. "
            "Set HEARTMULA_TRITON=0 to skip this check.", device, str(why)[:300])
    return bool(ok)


def device_choices() -> list[str]:
    """What a user may pick here: 'auto', each usable backend, and each card by index
    where a backend has more than one (cuda:0, cuda:1, ...)."""
    out = ["auto"]
    for kind in available_devices():
        out.append(kind)
        n = {"cuda": torch.cuda.device_count, "xpu": lambda: torch.xpu.device_count()}.get(kind, lambda: 1)()
        if n > 1:
            out += [f"{kind}:{i}" for i in range(n)]
    return out


DEVICE_SYNTAX = "auto, cpu, mps, cuda[:N] or xpu[:N] (N a card index: 0, 1, ...)"
# cpu:N is accepted too, unadvertised: torch names the CPU that way, and tests place a "second
# card" on the CPU by name to check two-device placement on a machine with none.
_INDEXED = ("cuda", "xpu", "cpu")


class DeviceSyntaxError(ValueError, argparse.ArgumentTypeError):
    """A device string outside DEVICE_SYNTAX. A ValueError for callers; an ArgumentTypeError so
    argparse prints this message, not its generic "invalid value"."""


def parse_device_arg(value: str) -> str:
    """Check one device string against DEVICE_SYNTAX and return it (stripped, lower case).

    The one syntax of every command's --device: usable as an argparse `type=`. It checks the
    form only; whether this machine has the device is resolve_device's question.
    """
    text = str(value).strip().lower()
    kind, sep, index = text.partition(":")
    if kind in ("auto", "mps", *_INDEXED) and not sep:
        return text
    if kind in _INDEXED and sep and index.isascii() and index.isdigit():
        return f"{kind}:{int(index)}"
    raise DeviceSyntaxError(f"device {value!r} is not a device name; use {DEVICE_SYNTAX}")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None) picks xpu > cuda > mps > cpu; an explicit string is checked against
    DEVICE_SYNTAX (ValueError) and then against this machine (RuntimeError)."""
    if isinstance(device, torch.device):
        device = str(device)
    if device is None:
        device = "auto"
    device = parse_device_arg(device)
    if device == "auto":
        return torch.device(available_devices()[0])
    dev = torch.device(device)
    if not _backend_available(dev.type):
        raise RuntimeError(
            f"device {device!r} was asked for but this PyTorch build ({torch.__version__}) "
            f"cannot use it; available here: {', '.join(available_devices())}. Use --device auto."
        )
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto': bfloat16 on accelerators (float32 where precision needs it is the model's
    business), float32 on CPU, where bf16 matmuls are slow and the goldens are float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype {dtype!r} is not supported; use auto, float32, bfloat16 or float16")
    return table[dtype]


def _module(device: torch.device):
    """The torch backend module for an accelerator device, or None for CPU/unknown."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda
    if device.type == "xpu" and _backend_available("xpu"):
        return torch.xpu
    if device.type == "mps" and _backend_available("mps"):
        return torch.mps
    return None


# Held while a CUDA graph is captured, and by whatever waits on the whole device. CUDA
# invalidates a capture when any thread synchronizes the device (or frees memory, which
# synchronizes) meanwhile, and a song queue captures frame steps in one thread while the
# codec thread finishes the previous song. Reentrant: a capture synchronizes first.
device_wide = threading.RLock()


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on `device`; a no-op on CPU."""
    device = torch.device(device)
    mod = _module(device)
    if mod is None:
        return
    with device_wide:
        if device.type == "mps":
            mod.synchronize()
        else:
            mod.synchronize(device)


def empty_cache(device: torch.device | str) -> None:
    """Give cached, unused device memory back to the driver; a no-op on CPU."""
    mod = _module(torch.device(device))
    if mod is not None and hasattr(mod, "empty_cache"):
        with device_wide:
            mod.empty_cache()


def memory_allocated(device: torch.device | str) -> int:
    """Bytes held by tensors on `device` (0 on CPU, where RSS is the measure)."""
    device = torch.device(device)
    mod = _module(device)
    if mod is None:
        return 0
    if device.type == "mps":
        return int(mod.current_allocated_memory())
    return int(mod.memory_allocated(device))


def max_memory_allocated(device: torch.device | str) -> int:
    """Peak bytes held by tensors since the last reset_peak_memory (0 on CPU and MPS)."""
    device = torch.device(device)
    mod = _module(device)
    if mod is None or device.type == "mps":
        return 0
    return int(mod.max_memory_allocated(device))


def reset_peak_memory(device: torch.device | str) -> None:
    device = torch.device(device)
    mod = _module(device)
    if mod is not None and device.type != "mps":
        mod.reset_peak_memory_stats(device)


def total_memory(device: torch.device | str) -> int:
    """Total device memory in bytes (0 where the backend does not say)."""
    device = torch.device(device)
    mod = _module(device)
    if mod is None:
        return 0
    if device.type == "mps":
        return int(mod.recommended_max_memory()) if hasattr(mod, "recommended_max_memory") else 0
    return int(mod.get_device_properties(device).total_memory)


def free_memory(device: torch.device | str) -> int:
    """Bytes that new tensors on `device` could still take: the driver's free memory plus what
    torch's allocator caches unused; on CPU the memory the system reports available; 0 where
    the backend does not say."""
    device = torch.device(device)
    mod = _module(device)
    if mod is None:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not every system has these names
            return 0
    if device.type == "mps":
        return max(0, total_memory(device) - int(mod.driver_allocated_memory()))
    if not hasattr(mod, "mem_get_info"):
        return 0
    free, _ = mod.mem_get_info(device)
    return int(free) + int(mod.memory_reserved(device)) - int(mod.memory_allocated(device))


def device_name(device: torch.device | str) -> str:
    """A human name: 'NVIDIA H100 80GB HBM3', 'Apple MPS', or the CPU model."""
    device = torch.device(device)
    mod = _module(device)
    if mod is not None and device.type in ("cuda", "xpu"):
        return str(mod.get_device_name(device))
    if device.type == "mps":
        return "Apple MPS"
    return _cpu_name()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return "CPU: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return "CPU: " + (platform.processor() or platform.machine())


def is_out_of_memory(error: BaseException) -> bool:
    """True for device out-of-memory errors on any backend."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return "out of memory" in text or "outofmemory" in text
