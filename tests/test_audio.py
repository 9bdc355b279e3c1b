"""Audio file I/O: formats round-trip, peak protection, atomic writes, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from heartmula.audio import (
    PEAK_CEILING,
    SAMPLE_RATE,
    AudioFileError,
    atomic_write_bytes,
    read_audio,
    resample,
    write_audio,
)

MP3_FRAME = 1152  # samples per MPEG-1 layer III frame: encoder delay/padding is about this size


def tone(seconds: float = 1.0, rate: int = SAMPLE_RATE, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    left = amplitude * np.sin(2 * np.pi * 440 * t)
    right = 0.6 * amplitude * np.sin(2 * np.pi * 660 * t)
    return np.stack([left, right]).astype(np.float32)


def rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(a, dtype=np.float64) ** 2)))


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_lossless_round_trip(tmp_path, suffix):
    audio = tone()
    path = write_audio(tmp_path / f"song{suffix}", audio)
    back, rate = read_audio(path)
    assert rate == SAMPLE_RATE and back.dtype == np.float32
    assert back.shape == audio.shape
    np.testing.assert_allclose(back, audio, atol=2 / 32768)  # 16-bit quantization
    assert leftovers(tmp_path) == [f"song{suffix}"]


def test_mp3_round_trip(tmp_path):
    audio = tone(2.0)
    path = write_audio(tmp_path / "song.mp3", audio)
    back, rate = read_audio(path)
    assert rate == SAMPLE_RATE and back.shape[0] == 2
    # Encoders may add delay and padding of up to about two MP3 frames.
    assert abs(back.shape[1] - audio.shape[1]) <= 2 * MP3_FRAME
    n = min(back.shape[1], audio.shape[1])
    for ch in range(2):
        assert rms(back[ch, :n]) == pytest.approx(rms(audio[ch, :n]), rel=0.1)


def test_mono_and_other_rates_read_back(tmp_path):
    mono = tone(0.5, rate=44100)[0]
    path = write_audio(tmp_path / "mono.wav", mono, sample_rate=44100)
    back, rate = read_audio(path)
    assert (rate, back.shape) == (44100, (1, mono.shape[0]))
    up = resample(back, rate, SAMPLE_RATE)
    assert up.shape[0] == 1 and abs(up.shape[1] - SAMPLE_RATE // 2) <= 1


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3"])
def test_peaks_are_scaled_down_not_clipped(tmp_path, suffix):
    loud = tone(amplitude=3.0)
    back, _ = read_audio(write_audio(tmp_path / f"loud{suffix}", loud))
    peak = np.abs(back).max()
    assert peak <= 1.0
    if suffix != ".mp3":  # lossless: exactly the ceiling, and the shape of the wave kept
        assert peak == pytest.approx(PEAK_CEILING, abs=2 / 32768)
        np.testing.assert_allclose(back, loud * (PEAK_CEILING / 3.0), atol=2 / 32768)


def test_quiet_audio_is_not_amplified_and_nan_is_silenced(tmp_path):
    quiet = tone(amplitude=0.25)
    quiet[:, :10] = np.nan
    back, _ = read_audio(write_audio(tmp_path / "quiet.wav", quiet))
    assert np.all(back[:, :10] == 0)
    np.testing.assert_allclose(back[:, 10:], quiet[:, 10:], atol=2 / 32768)


def test_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "song.wav"

    def write_then_fail(file, data, *args, **kwargs):
        with open(file, "wb") as f:  # the encoder got as far as creating and filling the file
            f.write(b"RIFF" + b"\0" * 100)
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(soundfile, "write", write_then_fail)
    with pytest.raises(RuntimeError, match="simulated"):
        write_audio(target, tone())
    assert leftovers(tmp_path) == []


def test_interrupted_overwrite_keeps_the_old_file(tmp_path, monkeypatch):
    target = write_audio(tmp_path / "song.flac", tone(0.2))
    before = target.read_bytes()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(soundfile, "write", fail)
    with pytest.raises(KeyboardInterrupt):
        write_audio(target, tone(0.5))
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == ["song.flac"]


def test_atomic_write_bytes(tmp_path):
    path = atomic_write_bytes(tmp_path / "sub" / "data.bin", b"hello")
    assert path.read_bytes() == b"hello"
    assert leftovers(path.parent) == ["data.bin"]


def test_unreadable_files_raise_clear_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioFileError, match=r"empty\.wav: the file is empty"):
        read_audio(empty)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"this is not audio at all" * 20)
    with pytest.raises(AudioFileError, match=r"junk\.mp3: not a readable audio file"):
        read_audio(junk)
    with pytest.raises(AudioFileError, match="no such file"):
        read_audio(tmp_path / "missing.flac")


def test_bad_writes_raise_clear_errors(tmp_path):
    with pytest.raises(AudioFileError, match=r"unsupported output format '\.ogg'"):
        write_audio(tmp_path / "song.ogg", tone())
    with pytest.raises(AudioFileError, match="nothing to write"):
        write_audio(tmp_path / "song.wav", np.zeros((2, 0), dtype=np.float32))
    assert leftovers(tmp_path) == []
