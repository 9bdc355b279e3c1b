"""Songs pipelined through two devices (two CPU "devices" here; two GPUs on the GPU machine)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from heartmula import Engine, GenerateOptions
from heartmula.demo import DEMO_VERSION, ensure_demo_bundle
from heartmula.pipeline import SongRequest, overlap, run_queue

from conftest import ROOT


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return ensure_demo_bundle(tmp_path_factory.mktemp("demo"))


def test_overlap_of_intervals():
    assert overlap([(0, 2), (3, 5)], [(1, 4)]) == pytest.approx(2.0)
    assert overlap([(0, 1)], [(1, 2)]) == 0.0


def test_queue_overlaps_decode_with_the_next_generation_and_matches_one_by_one(demo_dir):
    engine = Engine(model_path=str(demo_dir), version=DEMO_VERSION, device="cpu", codec_device="cpu")
    requests = [SongRequest("la la", "pop", GenerateOptions(max_audio_length_ms=3200, seed=s)) for s in (1, 2, 3)]
    seen = []
    report = run_queue(engine, requests, on_song=lambda i, r: seen.append(i))
    assert seen == [0, 1, 2] and len(report.results) == 3
    assert report.overlap_s > 0  # song k decoded while song k+1 generated
    assert report.wall_s < report.sequential_s
    for req, got in zip(requests, report.results):
        alone = engine.generate(req.lyrics, req.tags, req.options)
        np.testing.assert_array_equal(got.frames[0], alone.frames[0])
        np.testing.assert_allclose(got.audio[0], alone.audio[0], atol=1e-6)  # same seed, same audio


def test_queue_cli_places_models_and_writes_every_song(demo_dir, tmp_path):
    songs = tmp_path / "songs.json"
    songs.write_text(json.dumps([{"lyrics": "la", "tags": "pop", "max_audio_length_ms": 2000, "seed": 1},
                                 {"lyrics": "oh", "tags": "rock", "max_audio_length_ms": 2000, "takes": 2}]))
    r = subprocess.run([sys.executable, "-m", "heartmula", "queue", "--songs", str(songs), "--save-dir",
                        str(tmp_path / "out"), "--format", "wav", "--model-path", str(demo_dir), "--version", "demo",
                        "--mula-device", "cpu", "--codec-device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["song_01.json", "song_01.npy", "song_01.wav", "song_02_take1.json", "song_02_take1.npy",
                     "song_02_take1.wav", "song_02_take2.json", "song_02_take2.npy", "song_02_take2.wav"]
    assert "overlapped" in r.stdout


@pytest.mark.requires_cuda
def test_queue_on_one_cuda_card_captures_new_graphs_while_the_codec_decodes(demo_dir):
    """Each song is longer than the last, so each needs new caches and new frame-step graphs,
    captured while the previous song decodes (codec graphs too) in the codec's thread."""
    engine = Engine(model_path=str(demo_dir), version=DEMO_VERSION, device="cuda")
    requests = [SongRequest("la la", "pop", GenerateOptions(max_audio_length_ms=ms, seed=1))
                for ms in (3200, 30_000, 60_000)]
    report = run_queue(engine, requests)
    assert len(report.results) == 3 and report.overlap_s > 0
    alone = engine.generate(requests[2].lyrics, requests[2].tags, requests[2].options)
    np.testing.assert_array_equal(report.results[2].frames[0], alone.frames[0])
