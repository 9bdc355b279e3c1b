"""Start-up sweep (issue 17): atomic-write leftovers (.part) and orphaned audio (a song whose
sidecar is gone) older than a minute leave the outputs folder; the studio's temporary tree is
pruned by age at every depth. Real files, ages set with os.utime."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from heartmula import GenerateOptions, GenerateResult, History, load_engine
from heartmula.library.sweep import ORPHAN_MIN_AGE_S, prune_tree, sweep_outputs
from ui.studio import TEMP_MAX_AGE_S, Studio


def _age(path: Path, seconds: float) -> Path:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)
    return path


def _file(path: Path, age_s: float, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return _age(path, age_s)


def _song(history: History):
    n = 4800
    result = GenerateResult(
        audio=[np.zeros((2, n), np.float32)], sample_rate=48_000, frames=[np.zeros((1, 8), np.int64)], seeds=[1],
        options=GenerateOptions(seed=1, max_audio_length_ms=4000), lyrics="la", tags="t", prompt_len=1,
        prompt_s=0.1, frames_s=0.1, decode_s=0.1, total_s=0.3, frames_per_s=10.0, peak_memory_bytes=0,
        device="CPU", model_version="tiny")
    return history.save(result)[0]


def test_sweep_removes_old_leftovers_and_orphans_only(tmp_path):
    h = History(tmp_path)
    old_song = _song(h)
    for p in old_song.downloads:
        _age(p, 30 * 24 * 3600)  # a month-old song with its sidecar: kept
    old = 2 * ORPHAN_MIN_AGE_S
    gone = [
        _file(tmp_path / ".20250101-x.wav.k2j3h4.part", old),  # a crash mid-write
        _file(tmp_path / ".20250101-x.json.abcd.part", old),
        _file(tmp_path / "20250101-orphan.wav", old),  # its sidecar was deleted by hand
        _file(tmp_path / "20250101-orphan.mp3", old),
        _file(tmp_path / "20250101-orphan-take2.flac", old),
    ]
    kept = [
        _file(tmp_path / ".20250102-y.wav.zz.part", 5),  # a save in progress right now
        _file(tmp_path / "20250102-saving.wav", 5),  # audio written, sidecar about to be
        _file(tmp_path / "notes.txt", old),  # not ours to judge
        _file(tmp_path / "sub" / "old.wav", old),  # History is flat; sub-folders are left alone
        *old_song.downloads,
    ]
    (tmp_path / "dangling.wav").symlink_to(tmp_path / "nowhere")
    removed = sweep_outputs(tmp_path)
    assert sorted(removed) == sorted(gone)
    assert not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept)
    assert (tmp_path / "dangling.wav").is_symlink()  # links are never followed nor removed
    assert [s.id for s in h.list()] == [old_song.id]


def test_sweep_of_a_missing_folder_is_a_no_op(tmp_path):
    assert sweep_outputs(tmp_path / "not-yet") == []


def test_prune_tree_by_age_at_every_depth(tmp_path):
    root = tmp_path / "tmp"
    day = 24 * 3600
    old = [_file(root / "a.wav", 2 * day), _file(root / "x1" / "b.srt", 2 * day),
           _file(root / "x2" / "deep" / "deeper" / "c.txt", 2 * day)]
    new = [_file(root / "d.wav", 10), _file(root / "x1" / "e.srt", 10), _file(root / "x3" / "f.txt", 10)]
    (root / "fresh-empty").mkdir()  # temp_path made it a moment ago; its file is not written yet
    for d in [root / "x2" / "deep" / "deeper", root / "x2" / "deep", root / "x2"]:
        _age(d, 2 * day)
    removed = prune_tree(root, day)
    assert set(old) <= set(removed)
    assert not any(p.exists() for p in old) and all(p.exists() for p in new)
    assert not (root / "x2").exists()  # emptied old folders go too
    assert (root / "x1").is_dir() and (root / "fresh-empty").is_dir() and root.is_dir()


def test_studio_temp_path_prunes_nested_temporaries(tiny_ckpt, tmp_path):
    engine = load_engine(str(tiny_ckpt), version="tiny", device="cpu", preload=False)
    studio = Studio(engine=engine, history=History(tmp_path / "outputs"), temp_dir=tmp_path / "tmp")
    first = studio.temp_path("transcript.srt")  # temp_path hands out <temp_dir>/<random>/<name>
    first.write_text("1\n")
    _age(first, TEMP_MAX_AGE_S + 60)
    _age(first.parent, TEMP_MAX_AGE_S + 60)
    second = studio.temp_path("render.wav")
    assert not first.exists() and not first.parent.exists()
    assert second.parent.is_dir()


def test_app_sweeps_the_outputs_folder_at_start_up(tiny_ckpt, tmp_path, heartmula_cache):
    from conftest import StudioApp

    app = StudioApp(tiny_ckpt, tmp_path)
    old = 2 * ORPHAN_MIN_AGE_S
    gone = [_file(app.output_dir / ".20250101-x.wav.k2j3h4.part", old), _file(app.output_dir / "20250101-o.wav", old)]
    kept = _file(app.output_dir / "20250101-o2.wav", 1)
    app.start()
    try:
        assert not any(p.exists() for p in gone) and kept.exists()
    finally:
        app.stop()
