"""The demo bundle: written deterministically in the official layout, and it makes a song."""

from __future__ import annotations

import hashlib
import json

import soundfile as sf

from heartmula import Engine
from heartmula.checkpoint import resolve_paths
from heartmula.demo import DEMO_VERSION, ensure_demo_bundle, is_demo


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_demo_bundle_is_deterministic_and_official_layout(tmp_path):
    a = ensure_demo_bundle(tmp_path / "a")
    b = ensure_demo_bundle(tmp_path / "b")
    assert _digest(a) == _digest(b)
    assert ensure_demo_bundle(tmp_path / "a") == a  # second call reuses it
    paths = resolve_paths(a, DEMO_VERSION)
    assert paths.codec.is_dir() and is_demo(a)
    assert not list(a.parent.glob(".demo-bundle*"))  # no temporary folder left behind


def test_demo_bundle_makes_a_full_length_song(tmp_path):
    engine = Engine(model_path=str(ensure_demo_bundle(tmp_path)), version=DEMO_VERSION, device="cpu")
    result = engine.generate("[verse]\nla la la\n[chorus]\noh oh", "pop, piano", max_audio_length_ms=4000, seed=3)
    assert result.frames[0].shape == (50, 8)  # the demo never ends early
    audio = result.audio[0]
    assert audio.shape == (2, 50 * 3840)
    assert 0.01 < float((audio**2).mean() ** 0.5) < 1.0
    from heartmula.library.songs import save_take

    path, side = save_take(result, 0, tmp_path / "song.flac")
    data, rate = sf.read(path)
    assert rate == 48000 and data.shape == (50 * 3840, 2)
    assert json.loads(side.read_text())["model"]["heartmula_version"] == "demo"
