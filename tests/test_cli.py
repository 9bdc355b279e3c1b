"""The command line, run as a user runs it: a subprocess, real files."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

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


def run_cli_in(cwd, *args, stdin=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "heartmula", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, input=stdin, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_without_a_model_folder_generate_runs_on_the_demo_with_its_banner(tmp_path, heartmula_cache):
    """No ./ckpt where the user stands: the demo bundle stands in, and says it makes noise."""
    import json

    r = run_cli_in(tmp_path, "generate", "--lyrics", "la la", "--tags", "pop", "--max-audio-length-ms", "800",
                   "--ignore-eos", "--seed", "3", "--device", "cpu", "--save-path", "song.wav")
    assert r.returncode == 0, r.stderr
    assert "demo weights: noise, not music" in r.stderr and "./ckpt/HeartMuLa-oss-3B" in r.stderr
    meta = json.loads((tmp_path / "song.json").read_text())
    assert meta["model"]["heartmula_version"] == "demo" and meta["seed"] == 3
    # the demo folder itself, named without --version, is the demo too
    bundle = next(heartmula_cache.iterdir())
    r = run_cli_in(tmp_path, "generate", "--model-path", str(bundle), "--lyrics", "la", "--tags", "pop",
                   "--max-audio-length-ms", "160", "--device", "cpu", "--save-frames", "f.npy")
    assert r.returncode == 0 and "demo weights" in r.stderr, r.stderr


def test_a_named_model_folder_that_is_missing_stays_an_error_that_names_the_demo(tmp_path, heartmula_cache):
    r = run_cli_in(tmp_path, "generate", "--model-path", "elsewhere", "--lyrics", "la", "--tags", "pop")
    assert r.returncode == 2 and "model folder elsewhere does not exist" in r.stderr and "--demo" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("value,message", [
    ("lyrcs.txt", "--lyrics lyrcs.txt: no such file"),
    ("songs/verse.md", "--lyrics songs/verse.md: no such file"),
    ("../lyrics.lrc", "--lyrics ../lyrics.lrc: no such file"),
])
def test_a_mistyped_file_name_is_an_error_not_lyrics(tmp_path, heartmula_cache, value, message):
    r = run_cli_in(tmp_path, "generate", "--demo", "--lyrics", value, "--tags", "pop", "--save-frames", "f.npy")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "f.npy").exists()


def test_text_that_only_mentions_a_file_is_text_and_dash_reads_stdin(tmp_path, heartmula_cache):
    from heartmula.__main__ import read_text_arg

    assert read_text_arg("la la la", "--lyrics") == "la la la"
    assert read_text_arg("[verse]\nsee notes.txt\n", "--lyrics") == "[verse]\nsee notes.txt\n"
    assert read_text_arg("sing it loud.txt now", "--lyrics") == "sing it loud.txt now"  # spaces: text
    (tmp_path / "words.txt").write_text("from a file\n", encoding="utf-8")
    assert read_text_arg(str(tmp_path / "words.txt"), "--lyrics") == "from a file\n"
    r = run_cli_in(tmp_path, "generate", "--demo", "--lyrics", "-", "--tags", "pop", "--max-audio-length-ms", "160",
                   "--device", "cpu", "--save-frames", "f.npy", stdin="[verse]\nfrom stdin\n")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "f.npy").shape[0] == 1


def test_cpu_by_index_is_the_cpu(tiny_ckpt, tmp_path):
    """cpu:0 names the CPU (a second device by name); the weights load there, no 'download again'."""
    r = run_cli("generate", "--model-path", str(tiny_ckpt), "--version", "tiny", "--lyrics", "la", "--tags", "pop",
                "--max-audio-length-ms", "160", "--device", "cpu:0", "--save-frames", str(tmp_path / "f.npy"))
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "f.npy").shape[-1] == 8


def test_queue_checks_every_song_before_generating_any(tiny_ckpt, tmp_path):
    import json

    songs = tmp_path / "songs.json"
    songs.write_text(json.dumps([{"lyrics": "la la", "tags": "pop", "max_audio_length_ms": 160},
                                 {"lyrics": "   ", "tags": "pop"}]))
    out = tmp_path / "out"
    r = run_cli("queue", "--songs", str(songs), "--save-dir", str(out), "--model-path", str(tiny_ckpt), "--version",
                "tiny", "--device", "cpu")
    assert r.returncode == 2 and f"--songs {songs}, entry 2: lyrics are empty" in r.stderr, r.stderr
    assert not out.exists() or not list(out.iterdir())  # song 1 was not made first
    songs.write_text(json.dumps([{"lyrics": "la", "tags": "pop", "topk": 0}]))
    r = run_cli("queue", "--songs", str(songs), "--save-dir", str(out), "--model-path", str(tiny_ckpt), "--version",
                "tiny", "--device", "cpu")
    assert r.returncode == 2 and "entry 1: topk=0 is out of range" in r.stderr, r.stderr
    binary = tmp_path / "songs.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    r = run_cli("queue", "--songs", str(binary), "--save-dir", str(out), "--model-path", str(tiny_ckpt))
    assert r.returncode == 2 and f"--songs {binary}: not a readable JSON file" in r.stderr, r.stderr


def test_a_flag_that_is_not_a_number_names_the_flag_the_value_and_the_range(tiny_ckpt):
    """argparse's own words ("invalid int value: 'abc'") left the range out; a value in range
    but of the wrong kind (2.5 takes) is refused the same way, never rounded."""
    cases = [
        (["--max-audio-length-ms", "abc"], ["--max-audio-length-ms", "'abc'", "80 to 600000 ms"]),
        (["--takes", "2.5"], ["--takes", "2.5", "1 to 8"]),
        (["--topk", "1e9"], ["topk=1000000000", "1 to 8192"]),
        (["--max-audio-length-ms", "-5"], ["max_audio_length_ms=-5", "80 to 600000 ms"]),
    ]
    for extra, words in cases:
        r = run_cli("generate", "--lyrics", "la", "--tags", "pop", "--model-path", str(tiny_ckpt), "--version", "tiny",
                    "--device", "cpu", *extra)
        assert r.returncode == 2 and all(w in r.stderr for w in words), (extra, r.stderr)
        assert "Traceback" not in r.stderr
