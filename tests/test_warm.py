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
    covered = {(takes, guided) for takes, guided, _ in keys}
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


def test_warmed_shapes_share_reserved_caches_and_stay_warm_whatever_the_length(tiny_ckpt):
    """After warm_shapes, a request of any warmed shape at any length reuses the one reserved set of
    caches and that shape's own buffers (on CUDA, its graphs): none is allocated, compiled or
    captured again, also after a stop; and the songs are those of an engine without a reservation."""
    from heartmula.mula.graphed_step import request_shape

    engine = load_engine(str(tiny_ckpt), version="tiny", device="cpu")
    plain = load_engine(str(tiny_ckpt), version="tiny", device="cpu")
    shapes = [GenerateOptions(max_audio_length_ms=2000, takes=t, cfg_scale=c) for t, c in ((1, 1.5), (2, 1.0), (3, 1.5))]
    assert engine.warm_shapes(shapes) == shapes and engine.reserved
    model = engine.mula
    assert (model.backbone.cache_rows, model.backbone.cache_len) == (6, model.args.backbone.max_seq_len)
    store = model.backbone.layers[0].attn.kv_cache.k_cache.data_ptr()
    ready = {shape: id(buf) for shape, (buf, _) in engine._ready.items()}
    assert set(ready) == {request_shape(s) for s in shapes}
    for i, (takes, cfg, seconds) in enumerate([(3, 1.5, 0.8), (1, 1.5, 12), (2, 1.0, 4), (1, 1.5, 0.4), (3, 1.5, 6)]):
        opts = GenerateOptions(max_audio_length_ms=int(seconds * 1000), takes=takes, cfg_scale=cfg, seed=i,
                               ignore_eos=True)
        stop_at = [0]
        stopping = i == 2  # a stopped job keeps the reserved caches: the next request is still warm

        def should_stop():
            stop_at[0] += 1
            return stopping and stop_at[0] > 5

        fr = engine.generate_frames("la la la", "pop", opts, should_stop=should_stop)
        assert fr.stopped == stopping
        assert model.backbone.layers[0].attn.kv_cache.k_cache.data_ptr() == store
        assert {shape: id(buf) for shape, (buf, _) in engine._ready.items()} == ready
        if not stopping:
            for a, b in zip(fr.frames, plain.generate_frames("la la la", "pop", opts).frames):
                np.testing.assert_array_equal(a, b)
    engine.free_caches()  # the memory button: the reservation ends with the caches
    assert not engine.reserved and not engine._ready


def test_no_reservation_where_it_would_take_too_much_memory(tiny_ckpt, monkeypatch):
    from heartmula.accel import device as devices

    engine = load_engine(str(tiny_ckpt), version="tiny", device="cpu")
    monkeypatch.setattr(devices, "free_memory", lambda device: 1000)  # a nearly full card
    assert not engine.reserve_for([GenerateOptions(takes=4)]) and not engine.reserved
    assert "not reserved" in engine.last_timings["reserve"]
    lazy = load_engine(str(tiny_ckpt), version="tiny", device="cpu", lazy_load=True)
    assert not lazy.reserve_for([GenerateOptions()])  # lazy load frees the model after every song
