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


# Limits checked from a file's header before anything is decoded. A few MB of FLAC silence can
# declare 15 minutes of 8 channels at 655 kHz (gigabytes decoded); no real recording goes past
# 384 kHz (the highest rate of studio converters) or 32 channels (a 7.1.4 mix has 12).
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 32
# Frames decoded per block: at most 262144 x 32 x 4 bytes = 32 MB at the limits above. Smaller
# blocks cost soxr time per call (192 kHz stereo, 14.5 min: 6.7 s at 2**18, 9.8 s at 2**16).
READ_BLOCK_FRAMES = 1 << 18


def _checked_info(path: Path, max_duration_s: float | None):
    """soundfile's header of `path`, refused (AudioFileError) if it cannot be one we decode."""
    import soundfile as sf

    if path.is_dir():
        raise AudioFileError(f"{path}: is a folder, not an audio file; give a WAV, FLAC, MP3 or OGG file")
    if not path.is_file():
        raise AudioFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path}: the file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as e:  # LibsndfileError, RuntimeError, TypeError...
        raise AudioFileError(f"{path}: not a readable audio file ({_reason(e)}). Use WAV, FLAC, MP3 or OGG.") from e
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioFileError(f"{path}: the file's header is broken ({info.samplerate} Hz, {info.channels} channels)")
    if info.samplerate > MAX_SAMPLE_RATE:
        raise AudioFileError(f"{path}: the file declares a sample rate of {info.samplerate} Hz; at most "
                             f"{MAX_SAMPLE_RATE} Hz is accepted. Convert it to 48000 Hz first.")
    if info.channels > MAX_CHANNELS:
        raise AudioFileError(f"{path}: the file declares {info.channels} channels; at most {MAX_CHANNELS} are "
                             "accepted. Mix it down to stereo first.")
    if max_duration_s is not None and info.frames / info.samplerate > max_duration_s:
        raise AudioFileError(
            f"{path}: the audio is {info.frames / info.samplerate / 60:.1f} minutes long; "
            f"the limit is {max_duration_s / 60:g} minutes. Cut it into shorter parts."
        )
    return info


def _reason(error: Exception) -> str:
    """libsndfile's reason, in words that fit a file that exists: for contents it cannot parse
    (text named .mp3, say) it answers "File does not exist or is not a regular file"."""
    text = str(error)
    if "does not exist or is not a regular file" in text:
        return "its contents are not audio in a format this build reads"
    return text


def read_audio(path: str | os.PathLike, max_duration_s: float | None = None) -> tuple[np.ndarray, int]:
    """Read any file soundfile understands -> (float32 [channels, samples], sample_rate).

    The whole file at its own rate: for files of bounded size (our own songs). The header is
    checked first (rate, channels, `max_duration_s`); read_mono streams anything else."""
    import soundfile as sf

    path = Path(path)
    _checked_info(path, max_duration_s)
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioFileError(
            f"{path}: not a readable audio file ({_reason(e)}). Use WAV, FLAC, MP3 or OGG."
        ) from e
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: the file holds no audio samples")
    return np.ascontiguousarray(data.T), int(sample_rate)


def read_mono(path: str | os.PathLike, max_duration_s: float | None = None, *, sample_rate: int | None = None,
              block_frames: int = READ_BLOCK_FRAMES) -> tuple[np.ndarray, int]:
    """Read a file as float32 mono [samples] (the channel mean) -> (audio, rate), resampled to
    `sample_rate` when one is given (else the file's rate).

    The header is checked first: a file longer than `max_duration_s`, faster than
    MAX_SAMPLE_RATE or wider than MAX_CHANNELS is refused before anything is decoded. Then the
    audio is decoded `block_frames` at a time, and each block is mixed down (NaN/inf -> 0) and
    resampled before the next is read, so memory follows the mono result at `sample_rate`,
    never the whole file at its own rate. A header that understated the length is caught as the
    blocks arrive, not after."""
    import soundfile as sf

    path = Path(path)
    info = _checked_info(path, max_duration_s)
    rate = int(info.samplerate)
    stream = None
    if sample_rate is not None and sample_rate != rate:
        import soxr

        stream = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32")
    max_frames = None if max_duration_s is None else int(max_duration_s * rate)
    parts, frames = [], 0
    try:
        for block in sf.blocks(str(path), blocksize=block_frames, dtype="float32", always_2d=True):
            frames += block.shape[0]
            if max_frames is not None and frames > max_frames:  # a header that lied
                raise AudioFileError(f"{path}: the audio is longer than the limit of {max_duration_s / 60:g} minutes")
            mono = np.nan_to_num(block.mean(axis=1, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            parts.append(stream.resample_chunk(mono) if stream is not None else mono)
        if stream is not None:
            parts.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    except AudioFileError:
        raise
    except Exception as e:  # a file cut off mid-stream fails here, not at the header
        raise AudioFileError(f"{path}: the audio could not be decoded ({e}); the file may be cut off or damaged") from e
    if frames == 0:
        raise AudioFileError(f"{path}: the file holds no audio samples")
    mono = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return np.ascontiguousarray(mono, dtype=np.float32), int(sample_rate or rate)


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


LIMIT_KNEE = 0.9  # soft_limit leaves every sample up to this level as it is


def soft_limit(audio: np.ndarray, ceiling: float = PEAK_CEILING, knee: float = LIMIT_KNEE) -> np.ndarray:
    """Bend samples above `knee` smoothly towards `ceiling` (never reaching it); NaN/inf become 0.

    Unlike `peak_normalize` it looks at each sample alone, so audio limited piece by piece (a
    song heard while it is made) is the same as the whole song limited at once, and a file
    written from it is what was heard (`write_audio` leaves audio under the ceiling as it is)."""
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    over = np.abs(audio) > knee
    if not over.any():
        return audio
    room = ceiling - knee
    bent = knee + room * np.tanh((np.abs(audio[over]) - knee) / room)  # slope 1 at the knee: no kink
    out = audio.copy()
    out[over] = np.copysign(np.minimum(bent, np.nextafter(np.float32(ceiling), np.float32(0))), audio[over])
    return out


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
