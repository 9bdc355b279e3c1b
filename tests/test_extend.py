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
