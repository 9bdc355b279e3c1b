"""heartmula.library.history: songs on disk with sidecars, newest first, surviving restarts."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile as sf

from heartmula import GenerateOptions, GenerateResult, History


def _result(takes=1, seconds=0.5, seed=7, tags="pop, piano"):
    rng = np.random.default_rng(seed)
    n = int(48_000 * seconds)
    audio = [(0.1 * rng.standard_normal((2, n))).astype(np.float32) for _ in range(takes)]
    return GenerateResult(
        audio=audio, sample_rate=48_000, frames=[np.zeros((int(seconds * 12.5), 8), np.int64)] * takes,
        seeds=[seed + i for i in range(takes)], options=GenerateOptions(seed=seed, takes=takes, max_audio_length_ms=4000),
        lyrics="[verse]\nhello", tags=tags, prompt_len=10, prompt_s=0.1, frames_s=0.5, decode_s=0.2, total_s=0.8,
        frames_per_s=12.0, peak_memory_bytes=0, device="CPU", model_version="tiny",
    )


def test_save_writes_audio_formats_and_sidecar(tmp_path):
    h = History(tmp_path)
    (song,) = h.save(_result(seconds=0.5))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{song.id}.{ext}" for ext in ("wav", "mp3", "flac", "npy", "json"))
    audio, rate = sf.read(str(song.audio_path))
    assert rate == 48_000 and audio.shape[1] == 2 and abs(audio.shape[0] - 24_000) < 10
    meta = json.loads(song.sidecar_path.read_text())
    assert meta["seed"] == 7 and meta["tags"] == "pop, piano" and meta["audio_file"] == f"{song.id}.wav"
    assert meta["codes_file"] == f"{song.id}.npy" and song.frames().shape == (6, 8)  # the codes, to extend it
    assert [p.suffix for p in song.downloads] == [".wav", ".mp3", ".flac", ".json"]
    assert not list(tmp_path.glob("*.part"))  # atomic writes leave no temporaries


def test_listing_newest_first_and_takes(tmp_path):
    h = History(tmp_path)
    first = h.save(_result(tags="first"))
    time.sleep(1.1)  # sidecars record whole seconds; ids break ties within a second too
    second = h.save(_result(takes=2, tags="second"))
    time.sleep(0.01)
    third = h.save(_result(tags="third"))
    listed = h.list()
    assert [s.id for s in listed][0] == third[0].id
    assert [s.tags for s in listed] == ["third", "second", "second", "first"]
    assert {s.seed for s in second} == {7, 8} and {s.take for s in second} == {0, 1}
    assert listed[-1].id == first[0].id


def test_restart_survival(tmp_path):
    saved = History(tmp_path).save(_result(tags="kept"))
    again = History(tmp_path)  # a new process would build a new History on the same folder
    listed = again.list()
    assert [s.id for s in listed] == [saved[0].id]
    assert listed[0].lyrics == "[verse]\nhello" and listed[0].options["seed"] == 7
    assert again.get(saved[0].id).audio_path == saved[0].audio_path


def test_corrupt_sidecar_is_skipped_with_warning(tmp_path, caplog):
    h = History(tmp_path)
    good = h.save(_result(tags="good"))[0]
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    orphan = h.save(_result(tags="orphan"))[0]
    orphan.audio_path.unlink()  # a sidecar whose audio is gone
    songs, warnings = h.scan()
    assert [s.id for s in songs] == [good.id]
    assert len(warnings) == 3
    assert any("broken.json" in w for w in warnings) and any(orphan.id in w for w in warnings)
    assert "broken.json" in caplog.text


def test_delete_removes_audio_and_sidecar(tmp_path):
    h = History(tmp_path)
    keep = h.save(_result(tags="keep"))[0]
    gone = h.save(_result(tags="gone"))[0]
    removed = h.delete(gone.id)
    assert {p.suffix for p in removed} == {".json", ".wav", ".mp3", ".flac", ".npy"}
    assert sorted(p.stem for p in tmp_path.iterdir()) == [keep.id] * 5
    assert [s.id for s in h.list()] == [keep.id]
    with pytest.raises(ValueError, match="no song"):
        h.delete(gone.id)
    with pytest.raises(ValueError, match="no song"):
        h.delete("../etc/passwd")


def test_missing_folder_lists_nothing(tmp_path):
    assert History(tmp_path / "not-yet").scan() == ([], [])


# ----- one bad sidecar never hides the rest (issue 17) ------------------------------------------
# Each entry: (name, how the sidecar is spoilt). A new kind of bad input is one line here.
def _with(**fields):
    return lambda meta: json.dumps({**meta, **fields}).encode()


def _literal(field, text):
    """The field set to a JSON literal that json.dumps never writes (1e999, -Infinity, NaN)."""
    def spoil(meta):
        return json.dumps({**meta, field: "@@"}).replace('"@@"', text).encode()
    return spoil


BAD_SIDECARS = [
    ("takes-str", _with(takes="x")),
    ("take-huge", _literal("take", "1e999")),
    ("take-minus-inf", _literal("take", "-Infinity")),
    ("take-nan", _literal("take", "NaN")),
    ("take-negative", _with(take=-3)),
    ("take-float", _with(take=1.5)),
    ("take-bool", _with(take=True)),
    ("take-list", _with(take=[1])),
    ("takes-zero", _with(takes=0)),
    ("takes-dict", _with(takes={"a": 1})),
    ("duration-inf", _literal("duration_s", "Infinity")),
    ("duration-str", _with(duration_s="long")),
    ("duration-negative", _with(duration_s=-1)),
    ("seed-str", _with(seed="seven")),
    ("seed-float", _with(seed=7.5)),
    ("tags-list", _with(tags=["a"])),
    ("lyrics-dict", _with(lyrics={"a": 1})),
    ("created-int", _with(created=5)),
    ("options-list", _with(options=[1, 2])),
    ("audio-file-int", _with(audio_file=5)),
    ("audio-file-null", _with(audio_file=None)),
    ("exports-str", _with(exports="x")),
    ("json-list", lambda meta: b"[1, 2, 3]"),
    ("json-string", lambda meta: b'"hello"'),
    ("json-null", lambda meta: b"null"),
    ("json-number", lambda meta: b"1e999"),
    ("empty", lambda meta: b""),
    ("binary-junk", lambda meta: bytes(range(256)) * 4),
    ("latin-1", lambda meta: json.dumps({**meta, "tags": "café"}, ensure_ascii=False).encode("latin-1")),
    ("utf-16", lambda meta: json.dumps(meta).encode("utf-16")),
    ("deep-nesting", lambda meta: b"[" * 100_000 + b"]" * 100_000),
    ("truncated", lambda meta: json.dumps(meta).encode()[:-10]),
    ("huge", lambda meta: json.dumps({**meta, "lyrics": "la " * 3_000_000}).encode()),
]


@pytest.mark.parametrize("name,spoil", BAD_SIDECARS, ids=[b[0] for b in BAD_SIDECARS])
def test_one_bad_sidecar_is_skipped_and_the_rest_lists(tmp_path, caplog, name, spoil):
    h = History(tmp_path)
    good = h.save(_result(tags="good"))[0]
    bad = h.save(_result(tags="bad"))[0]
    bad.sidecar_path.write_bytes(spoil(json.loads(bad.sidecar_path.read_text())))
    songs = h.list()
    assert [s.id for s in songs] == [good.id]
    assert [s.label() for s in songs]  # labels of what lists never fail either
    assert [p for p, _ in h.skipped] == [bad.sidecar_path] and h.skipped[0][1]
    assert bad.sidecar_path.name in caplog.text
    with pytest.raises(ValueError, match="cannot be read"):
        h.get(bad.id)


def test_skipped_is_empty_when_every_sidecar_is_good(tmp_path):
    h = History(tmp_path)
    h.save(_result(takes=2))
    assert len(h.list()) == 2 and h.skipped == []
