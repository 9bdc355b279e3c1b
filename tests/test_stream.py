"""Hear a song while it is being made: the codec decodes each window once it can no longer
change, and the chunks of a take, joined, are the one-shot audio bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heartmula.codec.decoder import HOP_FRAMES, WINDOW_FRAMES, StreamDecoder, load_codec


@pytest.fixture(scope="module")
def codec(tiny_ckpt):
    return load_codec(tiny_ckpt / "HeartCodec-oss")


def test_stream_decoder_chunks_equal_decode_batch(codec):
    rng = np.random.default_rng(1)
    lengths = [900, 700, 380]  # 3, 2 and 1 windows; the short takes end while the long one goes on
    songs = [rng.integers(0, codec.config.codebook_size, (n, 8)) for n in lengths]
    gens = lambda: [torch.Generator().manual_seed(40 + i) for i in range(3)]  # noqa: E731
    whole = codec.decode_batch([s.T for s in songs], num_steps=2, generators=gens())
    stream = StreamDecoder(codec, 3, num_steps=2, generators=gens())
    chunks: list[list[np.ndarray]] = [[], [], []]
    first_audio_at = None
    for n in range(8, max(lengths) + 8, 8):  # the frame loop's sync points
        got = stream.feed([s[:n] for s in songs], [n >= len(s) for s in songs])
        for take, chunk in got:
            chunks[take].append(chunk)
            first_audio_at = first_audio_at or n
    for take, chunk in stream.finish(songs):
        chunks[take].append(chunk)
    # the first window of the long take was final once frame 372 existed: audio long before the end
    assert first_audio_at is not None and first_audio_at <= WINDOW_FRAMES + 8 < max(lengths)
    for i in range(3):
        np.testing.assert_array_equal(np.concatenate(chunks[i], axis=1), whole[i])
    assert sum(c.shape[1] for c in chunks[0]) == 900 * 3840 and len(chunks[0]) == 3
    assert HOP_FRAMES == 320


@pytest.fixture(scope="module")
def demo_engine(heartmula_cache):
    from heartmula import load_engine
    from heartmula.demo import DEMO_VERSION, ensure_demo_bundle

    return load_engine(str(ensure_demo_bundle()), version=DEMO_VERSION, device="cpu")


def test_generate_stream_plays_before_the_frames_end_and_equals_generate(demo_engine):
    """800 frames (three codec windows), two takes: the first chunk comes while frames are still
    being made, and each take's chunks joined are `generate`'s audio for the same seed."""
    from heartmula import AudioChunk, GenerateOptions, GenerateResult

    opts = GenerateOptions(max_audio_length_ms=800 * 80, takes=2, seed=21, ignore_eos=True, codec_steps=2)
    frames_done = []
    seen = []
    for item in demo_engine.generate_stream("la la la", "pop", opts,
                                            on_progress=lambda p: frames_done.append(p.done) if p.phase == "frames" else None):
        seen.append((item, frames_done[-1] if frames_done else 0))
    chunks = [(c, at) for c, at in seen if isinstance(c, AudioChunk)]
    result = seen[-1][0]
    assert isinstance(result, GenerateResult)
    assert chunks[0][1] < 800  # heard before the last frame was made
    one_shot = demo_engine.generate("la la la", "pop", opts)
    for take in range(2):
        mine = [c for c, _ in chunks if c.take == take]
        assert [c.start_sample for c in mine] == list(np.cumsum([0] + [c.audio.shape[1] for c in mine[:-1]]))
        joined = np.concatenate([c.audio for c in mine], axis=1)
        np.testing.assert_array_equal(joined, one_shot.audio[take])
        np.testing.assert_array_equal(result.audio[take], joined)
    assert result.seeds == one_shot.seeds == [21, 22]


def test_a_stop_ends_frames_and_decoding_and_keeps_what_was_heard(demo_engine):
    from heartmula import AudioChunk, GenerateOptions, GenerationCancelled

    opts = GenerateOptions(max_audio_length_ms=1500 * 80, seed=3, ignore_eos=True, codec_steps=2)
    heard = []
    stop = []
    with pytest.raises(GenerationCancelled):
        for item in demo_engine.generate_stream("la", "pop", opts, should_stop=lambda: bool(stop)):
            if isinstance(item, AudioChunk):
                heard.append(item)
                stop.append(True)  # stop once the first chunk is heard
    assert len(heard) == 1 and heard[0].start_sample == 0
    assert demo_engine.generate("la", "pop", opts.__class__(max_audio_length_ms=160, seed=1)).audio  # free again


def test_decoding_is_reported_as_soon_as_the_frames_end(demo_engine):
    """Reviewer: with the listener busy (8 takes decoding on a CPU) the progress line said frames
    1125/1125, ETA 0 for over a minute before "decoding" showed. The decode phase is reported by
    the frames' own thread the moment they end, whatever the listener is doing."""
    import threading

    from heartmula import AudioChunk, GenerateOptions

    opts = GenerateOptions(max_audio_length_ms=800 * 80, seed=5, ignore_eos=True, codec_steps=2)
    decoding = threading.Event()
    windows = []

    def on_progress(p):
        if p.phase == "decode":
            windows.append((p.done, p.total))
            decoding.set()

    stream = demo_engine.generate_stream("la la", "pop", opts, on_progress=on_progress)
    first = next(stream)
    assert isinstance(first, AudioChunk) and not decoding.is_set()  # heard while frames are made
    # The listener holds the stream (as a busy page would) until the frames have ended.
    assert decoding.wait(timeout=120), "the decode phase was not reported while the listener was busy"
    assert list(stream)[-1].audio[0].shape[1] == 800 * 3840
    # reviewer 2: the line then stayed at "0 / 3 windows" for the whole decode; each window counts
    assert windows[-1] == (3, 3) and [d for d, _ in windows] == sorted(d for d, _ in windows)
    assert len({d for d, _ in windows}) >= 2, windows
