"""The command line, run as a user runs it: a subprocess, real files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from conftest import ROOT


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "heartmula", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_reproduces_golden_frames(tiny_ckpt, mula_golden, tmp_path):
    meta, gold = mula_golden
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text(meta["lyrics"], encoding="utf-8")
    out = tmp_path / "frames.npy"
    r = run_cli("generate", "--model-path", str(tiny_ckpt), "--version", "tiny", "--lyrics", str(lyrics),
                "--tags", meta["tags"], "--max-audio-length-ms", str(24 * 80), "--cfg-scale", "1.5", "--topk", "1",
                "--ignore-eos", "--seed", "0", "--device", "cpu", "--save-frames", str(out))
    assert r.returncode == 0, r.stderr
    frames = np.load(out)
    assert frames.dtype == np.int64 and frames.shape == (1, 24, 8)
    np.testing.assert_array_equal(frames[0], gold["frames_cfg1.5"])
    assert "frames/s" in r.stderr.replace("/s", " frames/s") and "24/24" in r.stderr


def test_cli_bad_input_is_one_clear_line(tiny_ckpt, tmp_path):
    cases = [
        (["--model-path", str(tmp_path / "nope")], "does not exist"),
        (["--model-path", str(tiny_ckpt), "--version", "tiny", "--cfg-scale", "0.2"], "cfg_scale=0.2 is out of range"),
        (["--model-path", str(tiny_ckpt), "--version", "tiny", "--save-path", str(tmp_path / "x.ogg")], "use a .mp3"),
        (["--model-path", str(tiny_ckpt), "--version", "7B"], "HeartMuLa-oss-7B"),
    ]
    for extra, message in cases:
        r = run_cli("generate", "--lyrics", "la", "--tags", "pop", *extra)
        assert r.returncode == 2, (extra, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())


def test_cli_writes_a_playable_song_and_sidecar(tiny_ckpt, tmp_path):
    import json

    import soundfile as sf

    out = tmp_path / "x.mp3"
    r = run_cli("generate", "--model-path", str(tiny_ckpt), "--version", "tiny", "--lyrics", "la la", "--tags", "pop",
                "--max-audio-length-ms", "4000", "--ignore-eos", "--save-path", str(out), "--device", "cpu",
                "--seed", "4")
    assert r.returncode == 0, r.stderr
    info = sf.info(str(out))
    assert info.samplerate == 48000 and info.channels == 2
    assert abs(info.duration - 4.0) <= 0.08 + 0.05  # one frame, plus MP3 encoder padding
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["seed"] == 4 and meta["options"]["max_audio_length_ms"] == 4000 and meta["frames"] == 50
    assert meta["timings_s"]["decode"] > 0 and meta["model"]["heartmula_version"] == "tiny"
