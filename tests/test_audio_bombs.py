"""Decoded-size bombs (issue 17): a few MB of FLAC can hold 15 minutes of 8 channels at 655 kHz,
which decoded whole is gigabytes. Absurd rates and channel counts are refused from the header;
everything else is decoded in blocks, mixed down and resampled block by block, so memory follows
the 16 kHz mono result, not the file's rate x channels.

Measured before the fix (peak RSS above the baseline of a process that loads one file mono
16 kHz): 870 s of 192 kHz stereo FLAC (650 KB) +2073 MB; 870 s of 384 kHz stereo (1.5 MB)
+4144 MB; the 655 kHz 8-channel bomb (5.1 MB) drove the server from 1.1 to 8.1 GB.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from heartmula.audio import MAX_CHANNELS, MAX_SAMPLE_RATE, AudioFileError, read_mono
from heartmula.asr.transcribe import _load_mono_16k

ROOT = Path(__file__).resolve().parents[1]
# The result itself (15 min of 16 kHz float32) is 58 MB; a block and soxr's state a few MB more.
MAX_RSS_GROWTH_MB = 300

PEAK_RSS = """
import resource, sys
from heartmula.asr.transcribe import _load_mono_16k
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
mono = _load_mono_16k(sys.argv[1], None)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(mono.size, (peak - base) / 1024)
"""


def _sox(path: Path, rate: int, channels: int, seconds: float) -> Path:
    # Silence compresses to almost nothing in FLAC: the attacker's way of making a small bomb.
    if shutil.which("sox") is None:
        pytest.skip("sox is not installed (apt-get install sox); it writes the test files")
    subprocess.run(["sox", "-D", "-n", "-r", str(rate), "-c", str(channels), "-b", "16", str(path),
                    "trim", "0", str(seconds)], check=True)
    return path


def _peak_growth_mb(path: Path) -> tuple[int, float]:
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples, growth_mb = proc.stdout.split()
    return int(samples), float(growth_mb)


@pytest.mark.parametrize("name, rate, channels, words", [
    ("bomb.flac", 655_350, 8, f"sample rate of 655350 Hz; at most {MAX_SAMPLE_RATE} Hz"),
    ("wide.wav", 8000, MAX_CHANNELS + 1, f"{MAX_CHANNELS + 1} channels; at most {MAX_CHANNELS}"),  # FLAC stops at 8
])
def test_absurd_rates_and_channel_counts_are_refused_from_the_header(tmp_path, name, rate, channels, words):
    path = _sox(tmp_path / name, rate, channels, 0.2)
    with pytest.raises(AudioFileError, match=words) as e:
        read_mono(path)
    assert str(path) in str(e.value)
    with pytest.raises(AudioFileError, match=words):
        _load_mono_16k(path, None)


def test_a_long_192khz_stereo_file_loads_in_bounded_memory(tmp_path):
    path = _sox(tmp_path / "hi192.flac", 192_000, 2, 870)  # 650 KB, 14.5 minutes; about 6 s to write
    samples, growth_mb = _peak_growth_mb(path)
    assert samples == 870 * 16_000
    assert growth_mb < MAX_RSS_GROWTH_MB, f"loading {path.name} grew the process by {growth_mb:.0f} MB"


@pytest.mark.slow_attack
def test_the_largest_accepted_file_loads_in_bounded_memory(tmp_path):
    # The highest accepted rate, 8 channels, 14.5 minutes: 10.7 GB as float32 at its own rate.
    path = _sox(tmp_path / "hi384x8.flac", MAX_SAMPLE_RATE, 8, 870)
    samples, growth_mb = _peak_growth_mb(path)
    assert samples == 870 * 16_000
    assert growth_mb < MAX_RSS_GROWTH_MB, f"loading {path.name} grew the process by {growth_mb:.0f} MB"


def test_streamed_resampling_matches_resampling_at_once(tmp_path):
    import numpy as np
    import soundfile as sf

    from heartmula.audio import resample

    rng = np.random.default_rng(0)
    t = np.arange(int(3.3 * 44_100)) / 44_100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.05 * rng.standard_normal(t.size)], 1)
    path = tmp_path / "tone.wav"
    sf.write(path, stereo.astype(np.float32), 44_100, subtype="FLOAT")
    whole = resample(stereo.mean(axis=1).astype(np.float32), 44_100, 16_000)
    streamed, rate = read_mono(path, sample_rate=16_000, block_frames=4096)  # many blocks
    assert rate == 16_000 and abs(streamed.size - whole.size) <= 1
    n = min(streamed.size, whole.size)
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 1e-3
