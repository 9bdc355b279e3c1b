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
