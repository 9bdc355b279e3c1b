"""Audio constants and audio file I/O.

Everything that touches a sound file goes through here: reading any format soundfile
reads, resampling with soxr, and writing WAV/FLAC/MP3 atomically with peak protection.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

SAMPLE_RATE = 48_000  # HeartCodec output rate, Hz
N_CHANNELS = 2  # HeartCodec output is stereo
FRAME_RATE = 12.5  # HeartMuLa frames per second
FRAME_MS = int(1000 / FRAME_RATE)  # 80 ms of audio per frame
SAMPLES_PER_FRAME = int(SAMPLE_RATE / FRAME_RATE)  # 3840
N_CODEBOOKS = 8  # codes per frame

WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".mp3": "MP3"}
# Peak ceiling written to files: a little under full scale so MP3 encoding
# (which can overshoot the input peak) does not clip either.
PEAK_CEILING = 0.98


class AudioFileError(ValueError):
    """A file could not be read or written as audio; the message says which and why."""


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read any file soundfile understands -> (float32 [channels, samples], sample_rate)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path}: the file is empty (0 bytes)")
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioFileError(
            f"{path}: not a readable audio file ({e}). Use WAV, FLAC, MP3 or OGG."
        ) from e
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: the file holds no audio samples")
    return np.ascontiguousarray(data.T), int(sample_rate)


def read_mono(path: str | os.PathLike, max_duration_s: float | None = None,
              block_s: float = 10.0) -> tuple[np.ndarray, int]:
    """Read a file as float32 mono [samples] (the channel mean) -> (audio, sample_rate).

    The header is checked first: a file longer than `max_duration_s` is refused before
    anything is decoded, and the audio is read in blocks of `block_s` and mixed down as it
    goes, so a 96 kHz 6-channel file costs no more memory than its mono mix."""
    import soundfile as sf

    path = Path(path)
    if path.is_dir():
        raise AudioFileError(f"{path}: is a folder, not an audio file; give a WAV, FLAC, MP3 or OGG file")
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path}: the file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as e:  # LibsndfileError, RuntimeError, TypeError...
        raise AudioFileError(f"{path}: not a readable audio file ({e}). Use WAV, FLAC, MP3 or OGG.") from e
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioFileError(f"{path}: the file's header is broken ({info.samplerate} Hz, {info.channels} channels)")
    if max_duration_s is not None and info.frames / info.samplerate > max_duration_s:
        raise AudioFileError(
            f"{path}: the audio is {info.frames / info.samplerate / 60:.1f} minutes long; "
            f"the limit is {max_duration_s / 60:g} minutes. Cut it into shorter parts."
        )
    parts = []
    try:
        blocksize = max(1, int(block_s * info.samplerate))
        for block in sf.blocks(str(path), blocksize=blocksize, dtype="float32", always_2d=True):
            parts.append(block.mean(axis=1, dtype=np.float32))
    except Exception as e:  # a file cut off mid-stream fails here, not at the header
        raise AudioFileError(f"{path}: the audio could not be decoded ({e}); the file may be cut off or damaged") from e
    mono = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if mono.size == 0:
        raise AudioFileError(f"{path}: the file holds no audio samples")
    if max_duration_s is not None and mono.size / info.samplerate > max_duration_s:  # a header that lied
        raise AudioFileError(f"{path}: the audio is longer than the limit of {max_duration_s / 60:g} minutes")
    return np.ascontiguousarray(mono), int(info.samplerate)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """[channels, samples] or [samples] -> [samples], the channel mean."""
    return audio if audio.ndim == 1 else audio.mean(axis=0)


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample [channels, samples] or [samples] float audio with soxr (high quality)."""
    if orig_rate == new_rate:
        return audio
    import soxr

    if audio.ndim == 1:
        return soxr.resample(audio, orig_rate, new_rate).astype(np.float32, copy=False)
    out = soxr.resample(np.ascontiguousarray(audio.T), orig_rate, new_rate)
    return np.ascontiguousarray(out.T).astype(np.float32, copy=False)


def peak_normalize(audio: np.ndarray, ceiling: float = PEAK_CEILING) -> np.ndarray:
    """Scale down (never up) so that no sample exceeds `ceiling`; NaN/inf become 0."""
    audio = np.nan_to_num(audio.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > ceiling:
        audio = audio * (ceiling / peak)
    return audio


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to `path` through a temporary file in the same folder and a rename,
    so a reader never sees a half-written file and a crash leaves none behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write [channels, samples] (or [samples]) float audio as WAV, FLAC or MP3 (by suffix).

    The file appears atomically: it is encoded to a temporary file beside the target,
    then renamed. Peaks above PEAK_CEILING are scaled down so nothing clips.
    """
    import soundfile as sf

    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioFileError(
            f"{path}: unsupported output format {path.suffix!r}; use one of {', '.join(WRITE_FORMATS)}"
        )
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise AudioFileError(f"{path}: nothing to write (audio shape {tuple(audio.shape)})")
    audio = peak_normalize(audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        subtype = "PCM_16" if fmt == "WAV" else None
        sf.write(tmp, audio.T, sample_rate, format=fmt, subtype=subtype)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def _unlink_quietly(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
