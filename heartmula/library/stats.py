"""Live throughput numbers for the studio's Settings tab (no UI code here).

`LiveStats` is one thread-safe record per process: whoever forwards an engine's
`Progress` (the UI's worker threads) calls `progress()`, and finished jobs report their
real-time factors. `snapshot()` is what a refresh timer reads. `device_utilization()`
asks the vendor tool where one is available (NVML for NVIDIA, `xpu-smi` for Intel) and
otherwise says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass

NOT_REPORTED = "not reported"


@dataclass(frozen=True)
class StatsSnapshot:
    job: str | None  # "generate", "compare", "transcribe" or None when idle
    phase: str | None  # the running job's phase ("prompt", "frames", "decode", "saving", "transcribe")
    done: int
    total: int
    elapsed_s: float
    eta_s: float | None
    frames_per_s: float | None  # the current (or last) generation's frame rate, one take
    ms_per_frame: float | None
    codec_rtf: float | None  # last decode: seconds spent / seconds of audio (lower is faster)
    transcribe_rtf: float | None  # last transcription: elapsed / audio duration (lower is faster)
    jobs_done: int
    updated_s_ago: float | None

    def to_dict(self) -> dict:
        return asdict(self)


class LiveStats:
    def __init__(self):
        self._lock = threading.Lock()
        self._job = None
        self._phase = None
        self._done = self._total = 0
        self._elapsed = 0.0
        self._eta = None
        self._started = None
        self._fps = None
        self._codec_rtf = None
        self._tr_rtf = None
        self._jobs_done = 0
        self._updated = None

    def start(self, job: str) -> None:
        with self._lock:
            self._job, self._phase = job, None
            self._done = self._total = 0
            self._elapsed, self._eta = 0.0, None
            self._started = self._updated = time.monotonic()

    def progress(self, p) -> None:
        """Record a heartmula.Progress (phase, done, total, elapsed_s, per_s, eta_s)."""
        with self._lock:
            self._phase, self._done, self._total = p.phase, int(p.done), int(p.total)
            self._elapsed, self._eta = float(p.elapsed_s), p.eta_s
            if p.phase == "frames" and p.per_s > 0:
                self._fps = float(p.per_s)
            self._updated = time.monotonic()

    def phase(self, phase: str) -> None:
        """A step of the running job that reports no counts (e.g. "saving")."""
        with self._lock:
            self._phase, self._done, self._total, self._eta = phase, 0, 0, None
            self._updated = time.monotonic()

    def generation_done(self, result) -> None:
        """Record a GenerateResult's frame rate and the codec's real-time factor."""
        with self._lock:
            if result.frames_per_s > 0:
                self._fps = float(result.frames_per_s)
            audio_s = max(result.durations_s) if result.audio else 0.0
            if audio_s > 0:
                self._codec_rtf = result.decode_s / audio_s
            self._updated = time.monotonic()

    def transcription_done(self, result) -> None:
        with self._lock:
            self._tr_rtf = float(result.real_time_factor)
            self._updated = time.monotonic()

    def finish(self) -> None:
        with self._lock:
            self._job = self._phase = None
            self._eta = None
            self._jobs_done += 1
            self._updated = time.monotonic()

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            now = time.monotonic()
            elapsed = now - self._started if self._job and self._started is not None else self._elapsed
            return StatsSnapshot(
                job=self._job,
                phase=self._phase,
                done=self._done,
                total=self._total,
                elapsed_s=elapsed,
                eta_s=self._eta,
                frames_per_s=self._fps,
                ms_per_frame=1000.0 / self._fps if self._fps else None,
                codec_rtf=self._codec_rtf,
                transcribe_rtf=self._tr_rtf,
                jobs_done=self._jobs_done,
                updated_s_ago=now - self._updated if self._updated is not None else None,
            )


_util_cache: dict[str, tuple[float, str]] = {}


def device_utilization(device: str, max_age_s: float = 2.0) -> str:
    """'37 %' from the vendor tool for a 'cuda:N' or 'xpu:N' device, else 'not reported'.
    Results are cached for max_age_s (the tools are slow to ask)."""
    hit = _util_cache.get(device)
    if hit and time.monotonic() - hit[0] < max_age_s:
        return hit[1]
    kind, _, index = str(device).partition(":")
    idx = int(index) if index.isdigit() else 0
    value = NOT_REPORTED
    try:
        if kind == "cuda":
            value = _nvml(idx)
        elif kind == "xpu":
            value = _xpu_smi(idx)
    except Exception:  # a missing or broken vendor tool is not an error for the studio
        value = NOT_REPORTED
    _util_cache[device] = (time.monotonic(), value)
    return value


def _nvml(index: int) -> str:
    try:
        import pynvml  # from the nvidia-ml-py package
    except ImportError:
        return NOT_REPORTED
    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return f"{pynvml.nvmlDeviceGetUtilizationRates(handle).gpu} %"
    finally:
        pynvml.nvmlShutdown()


def _xpu_smi(index: int) -> str:
    exe = shutil.which("xpu-smi")
    if exe is None:
        return NOT_REPORTED
    out = subprocess.run([exe, "stats", "-d", str(index), "-j"], capture_output=True, text=True, timeout=5)
    if out.returncode != 0:
        return NOT_REPORTED
    data = json.loads(out.stdout)
    for item in data.get("device_level", []):
        if item.get("metrics_type") == "XPUM_STATS_GPU_UTILIZATION":
            return f"{float(item['value']):.0f} %"
    return NOT_REPORTED
