"""Issue 19, part 3 on CPU: the studio warms the request shapes it is likely to be asked for in the
background, and a real request never waits for that (real engine, tiny checkpoint)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from heartmula import DEFAULT_PRESET, GenerateOptions, likely_shapes, load_engine, load_presets, shape_of


@pytest.fixture(scope="module")
def engine(tiny_ckpt):
    return load_engine(str(tiny_ckpt), version="tiny", device="cpu")


def test_likely_shapes_start_with_the_default_and_cover_takes_and_guidance():
    presets, _ = load_presets()
    shapes = likely_shapes(presets, DEFAULT_PRESET)
    assert shape_of(shapes[0]) == shape_of(presets[DEFAULT_PRESET].generate)
    keys = [shape_of(s) for s in shapes]
    assert len(keys) == len(set(keys))  # each shape once
    covered = {(takes, guided) for takes, guided, _, _ in keys}
    assert {(t, g) for t in (1, 2, 3, 4) for g in (True, False)} <= covered
    # the presets' own requests come before the takes and guidance nobody has picked yet
    preset_keys = {shape_of(p.generate) for p in presets.values()}
    first_other = next(i for i, k in enumerate(keys) if k not in preset_keys)
    assert all(k in preset_keys for k in keys[:first_other])


def test_a_request_stops_the_warm_up_within_a_frame_and_it_finishes_after(engine):
    """The request arrives while a warm step makes its frames: that step stops at the next frame,
    the request runs (and makes what it makes without any warm-up), then every shape is warmed."""
    request = GenerateOptions(max_audio_length_ms=1200, seed=5, ignore_eos=True, codec_steps=2, takes=2)
    expected = engine.generate("hello", "pop", request)
    shapes = [GenerateOptions(max_audio_length_ms=4000, takes=t, cfg_scale=c) for t in (1, 3) for c in (1.5, 1.0)]
    calls, got = [0], {}

    def make_the_request():
        got["result"] = engine.generate("hello", "pop", request)

    asker = threading.Thread(target=make_the_request)

    def hook():  # polled by the warm-up between its frames: the request comes in the middle of a step
        calls[0] += 1
        if calls[0] == 6:
            asker.start()
            while not engine.busy:  # the request is waiting for the engine
                threading.Event().wait(0.001)
        return False

    engine.last_timings.pop("warm_gave_way", None)
    warmed = engine.warm_shapes(shapes, should_stop=hook)
    asker.join()
    assert engine.last_timings["warm_gave_way"] == 1  # the step in progress stopped for the request
    assert [shape_of(s) for s in warmed] == [shape_of(s) for s in shapes]  # and was warmed after it
    for a, b in zip(got["result"].audio, expected.audio):
        np.testing.assert_array_equal(a, b)
    assert not engine.busy


def test_the_studio_warms_after_its_page_is_served(studio_app):
    """app.py: the page answers first (start-up is no slower); then the likely shapes are warmed,
    the default's first, as the log says."""
    import time

    deadline = time.monotonic() + 300
    while "warm-up done" not in (log := studio_app.log.read_text()):
        assert time.monotonic() < deadline, log[-3000:]
        assert studio_app.proc.poll() is None, log[-3000:]
        threading.Event().wait(0.2)  # the poll's interval: the wait is on the log's content
    served = log.index("Running on local URL")
    warmed = [line for line in log.splitlines() if " warmed (" in line]
    assert warmed and log.index(warmed[0]) > served, log[-3000:]
    presets, _ = load_presets()
    assert str(shape_of(presets[DEFAULT_PRESET].generate)) in warmed[0]
    assert "warm-up failed" not in log
