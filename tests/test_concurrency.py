"""One job's clean-up never frees what another job is using (real engine, tiny checkpoint).

CI once saw the studio's background warm-up die with `self.rope[input_pos]`: None: the KV
caches had been freed under it by code that did not hold the engine. These tests hold a job
at its prompt step, with its caches set up, and free from another thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from heartmula import GenerateOptions, load_engine

OPTS = GenerateOptions(max_audio_length_ms=1200, seed=5, ignore_eos=True, takes=2, codec_steps=2)


@pytest.fixture()
def engine(tiny_ckpt):
    return load_engine(str(tiny_ckpt), version="tiny", device="cpu")


class HeldJob:
    """`generate_frames` on a thread, held at its prompt step (its caches set up) until released."""

    def __init__(self, engine):
        self.inside, self.release = threading.Event(), threading.Event()
        self.result, self.error = None, None

        def hold(p):
            if p.phase == "prompt":
                self.inside.set()
                self.release.wait()

        def run():
            try:
                self.result = engine.generate_frames("hello", "pop", OPTS, on_progress=hold)
            except BaseException as e:  # noqa: BLE001 - reported by the test
                self.error = e

        self.thread = threading.Thread(target=run)
        self.thread.start()
        self.inside.wait()

    def finish(self) -> list[np.ndarray]:
        self.release.set()
        self.thread.join()
        assert self.error is None, repr(self.error)
        return self.result.frames


def _free_beside(job: HeldJob, free) -> threading.Thread:
    """Start `free` on another thread while `job` holds the engine; give it the time to run
    under the job (it must not: it waits for the job instead)."""
    t = threading.Thread(target=free)
    t.start()
    t.join(timeout=0.5)  # the old code had freed by now; the new one is still waiting
    return t


@pytest.mark.parametrize("free", ["free_caches", "unload"])
def test_freeing_while_a_job_runs_waits_for_the_job(engine, free):
    expected = engine.generate_frames("hello", "pop", OPTS).frames
    job = HeldJob(engine)
    freer = _free_beside(job, getattr(engine, free))
    for a, b in zip(job.finish(), expected):  # the job ran on its own caches to the end
        np.testing.assert_array_equal(a, b)
    freer.join()
    assert engine.mula is None if free == "unload" else not engine._ready
    assert not engine.busy


def test_an_abandoned_stream_never_frees_under_the_next_job(engine):
    """A listener gone (the stream closed) frees the job's caches, but the next job may have
    started on them by then: that job owns them, and the close returns at once (it may run on
    the server's own thread)."""
    expected = engine.generate_frames("hello", "pop", OPTS).frames
    stream = engine.generate_stream("hello", "pop", OPTS)
    next(stream)  # a chunk: its frames are done, the engine is free for the next job
    job = HeldJob(engine)
    closer = _free_beside(job, stream.close)
    closer.join(timeout=60)  # ends at once; a close that waited for the held job never would
    assert not closer.is_alive()
    for a, b in zip(job.finish(), expected):
        np.testing.assert_array_equal(a, b)
    assert not engine.busy


def test_an_abandoned_stream_keeps_reserved_caches(engine):
    """A listener gone is a stop: caches reserved for every shape stay, as after the stop button."""
    assert engine.reserve_for([OPTS])
    store = engine.mula.backbone.layers[0].attn.kv_cache.k_cache.data_ptr()
    stream = engine.generate_stream("hello", "pop", OPTS)
    next(stream)
    stream.close()
    assert engine.reserved
    assert engine.mula.backbone.layers[0].attn.kv_cache.k_cache.data_ptr() == store


def test_unload_ends_the_warm_up_and_the_model_stays_unloaded(engine):
    """Settings → Unload during the background warm-up: the warm step in progress gives way
    within a frame, the warm-up ends rather than load the model again, and the memory is free."""
    shapes = [GenerateOptions(max_audio_length_ms=4000, takes=t) for t in (1, 2, 3)]
    calls = [0]
    unloader = threading.Thread(target=engine.unload)

    def hook():  # polled between the warm step's frames
        calls[0] += 1
        if calls[0] == 4:
            unloader.start()
            while not engine.busy and unloader.is_alive():  # the unload is waiting for the engine
                threading.Event().wait(0.001)
        return False

    warmed = engine.warm_shapes(shapes, should_stop=hook)
    unloader.join()
    assert len(warmed) < len(shapes)
    assert engine.mula is None and not engine._ready
    assert not engine.busy
