"""Extend a song, or regenerate it from a point: the kept frames go into the prompt step, and
the frames after them are drawn as one longer run would draw them (tiny golden checkpoint)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from heartmula import Engine, GenerateOptions

LYRICS, TAGS = "[verse]\nla la la\n[chorus]\nsing it\n", "pop, piano"


@pytest.fixture(scope="module")
def engine(tiny_ckpt):
    return Engine(model_path=str(tiny_ckpt), version="tiny", device="cpu").load(codec=False)


@pytest.mark.parametrize("takes,cfg", [(1, 1.0), (1, 1.5), (2, 1.0), (3, 1.5)])
def test_extending_24_frames_by_24_equals_one_run_of_48(engine, takes, cfg):
    opts = GenerateOptions(max_audio_length_ms=48 * 80, takes=takes, cfg_scale=cfg, seed=5, ignore_eos=True)
    full = engine.generate_frames(LYRICS, TAGS, opts)
    first = engine.generate_frames(LYRICS, TAGS, replace(opts, max_audio_length_ms=24 * 80))
    more = engine.generate_frames(LYRICS, TAGS, opts, kept=first.frames)
    for i in range(takes):
        assert more.frames[i].shape == (48, 8)
        np.testing.assert_array_equal(more.frames[i], full.frames[i])
    assert more.steps == 23  # frame 24 comes from the prompt step, 25..47 from the loop


@pytest.mark.parametrize("cfg", [1.0, 1.5])
def test_regenerating_from_a_point_keeps_what_came_before(engine, cfg):
    opts = GenerateOptions(max_audio_length_ms=40 * 80, cfg_scale=cfg, seed=5, ignore_eos=True)
    song = engine.generate_frames(LYRICS, TAGS, opts).frames[0]
    at = 17
    redo = engine.generate_frames(LYRICS, TAGS, replace(opts, seed=6, takes=2), kept=[song[:at]])
    for frames in redo.frames:
        np.testing.assert_array_equal(frames[:at], song[:at])
        assert (frames[at:] != song[at:]).any(axis=1).mean() > 0.5  # a new seed: most new frames differ
    assert not np.array_equal(redo.frames[0][at:], redo.frames[1][at:])  # and the two takes differ


@pytest.mark.parametrize("kept,length_frames,message", [
    ([np.zeros((30, 8), np.int64)], 30, "the song already has 2.40 s"),
    ([np.zeros((30, 8), np.int64)], 400, "plus at most"),
    ([np.zeros((3, 7), np.int64)], 10, "must be \\[frames, 8\\]"),
    ([np.full((3, 8), 9000, np.int64)], 10, "codes 0 to"),
    ([np.zeros((3, 8), np.int64)] * 2, 10, "2 take\\(s\\) were given"),
])
def test_bad_continuations_are_refused_with_the_allowed_range(engine, kept, length_frames, message):
    with pytest.raises(ValueError, match=message):
        engine.generate_frames(LYRICS, TAGS, GenerateOptions(max_audio_length_ms=length_frames * 80), kept=kept)


def test_audio_before_the_window_holding_the_change_is_kept(tiny_ckpt):
    """A song regenerated from frame t, decoded with its parent's codec seed: every sample of
    the windows that end before t is the parent's, bit for bit (three windows of 29.76 s)."""
    from heartmula.codec.decoder import HOP_FRAMES, unchanged_samples

    engine = Engine(model_path=str(tiny_ckpt), version="tiny", device="cpu")  # the codec loads on first decode
    rng = np.random.default_rng(0)
    song = rng.integers(0, 8192, (900, 8))
    # window 1 holds frames 320..691: a change at 691 touches it, one at 692 only windows 2..
    for t, windows_kept in ((691, 1), (692, 2)):
        redo = song.copy()
        redo[t:] = rng.integers(0, 8192, (900 - t, 8))
        opts = GenerateOptions(codec_steps=2)
        a, b = engine.decode([song, redo], opts, seeds=[11, 11])
        keep = unchanged_samples(t)
        assert keep == windows_kept * HOP_FRAMES * 3840 and a.shape == b.shape
        np.testing.assert_array_equal(a[:, :keep], b[:, :keep])
        assert not np.array_equal(a[:, keep:], b[:, keep:])


def test_cli_extend_and_regenerate_a_saved_song(tiny_ckpt, tmp_path):
    """generate -> extend -> regenerate, as a user runs them; the codes prove the exactness."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "heartmula", *args, "--model-path", str(tiny_ckpt), "--version",
                               "tiny", "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=300)

    common = ["--lyrics", LYRICS, "--tags", TAGS, "--seed", "3", "--ignore-eos"]
    assert cli("generate", *common, "--max-audio-length-ms", str(24 * 80), "--save-path", str(tmp_path / "a.wav"),
               "--codec-steps", "2").returncode == 0
    r = cli("generate", *common, "--max-audio-length-ms", str(48 * 80), "--save-frames", str(tmp_path / "full.npy"))
    assert r.returncode == 0, r.stderr
    r = cli("extend", "--from", str(tmp_path / "a.json"), "--seconds", "1.92", "--ignore-eos",
            "--save-path", str(tmp_path / "b.wav"))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), np.load(tmp_path / "full.npy")[0])
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["parent"] == {"sidecar": "a.json", "id": "a", "mode": "extend", "from_frame": 24, "at_s": 1.92}
    assert b["frames"] == 48 and b["seed"] == 3

    r = cli("regenerate", "--from", str(tmp_path / "a.json"), "--at", "0:01", "--takes", "2", "--seed", "9",
            "--save-path", str(tmp_path / "c.wav"))
    assert r.returncode == 0, r.stderr
    a = np.load(tmp_path / "a.npy")
    for take in (1, 2):
        c = np.load(tmp_path / f"c_take{take}.npy")
        np.testing.assert_array_equal(c[:12], a[:12])  # 0:01 = frame 12
        meta = json.loads((tmp_path / f"c_take{take}.json").read_text())
        assert meta["parent"]["from_frame"] == 12 and meta["seed"] == 8 + take

    for args, message in ((["regenerate", "--from", str(tmp_path / "a.json"), "--at", "0:05"], "give a time from"),
                          (["regenerate", "--from", str(tmp_path / "a.json"), "--at", "1:75"], "write it as m:ss"),
                          (["extend", "--from", str(tmp_path / "a.json"), "--seconds", "60"], "plus at most"),
                          (["extend", "--from", str(tmp_path / "nope.json"), "--seconds", "1"], "not a song's sidecar")):
        r = cli(*args, "--save-path", str(tmp_path / "x.wav"))
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    old = json.loads((tmp_path / "a.json").read_text())
    del old["codes_file"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    r = cli("extend", "--from", str(tmp_path / "old.json"), "--seconds", "1", "--save-path", str(tmp_path / "x.wav"))
    assert r.returncode == 2 and "saved without its codes" in r.stderr
    assert not (tmp_path / "x.wav").exists()
