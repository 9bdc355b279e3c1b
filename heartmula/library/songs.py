"""Saving a generated take: the audio file plus a JSON sidecar with everything that made it."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..audio import atomic_write_bytes, write_audio

SIDECAR_VERSION = 1
CODES_SUFFIX = ".npy"  # a take's frames ([n, 8] int64) beside its audio, for extend and regenerate


def sidecar_path(audio_path: str | Path) -> Path:
    return Path(audio_path).with_suffix(".json")


def song_metadata(result, take: int) -> dict:
    """Every setting, the seed, model versions, durations and speeds of one take."""
    import torch

    opts = asdict(result.options)
    opts["seed"] = result.seeds[take]
    audio = result.audio[take]
    return {
        "sidecar_version": SIDECAR_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # When the job ran (Unix seconds): the engine's start and the moment this was saved.
        "job_started_unix_s": round(time.time() - result.total_s, 3),
        "saved_unix_s": round(time.time(), 3),
        "lyrics": result.lyrics,
        "tags": result.tags,
        "take": take,
        "takes": len(result.audio),
        "seed": result.seeds[take],
        "options": opts,
        "model": {"heartmula_version": result.model_version, "heartcodec": "HeartCodec-oss", "quant": result.quant},
        "frames": int(result.frames[take].shape[0]),
        "duration_s": round(audio.shape[-1] / result.sample_rate, 3),
        "sample_rate": result.sample_rate,
        "channels": int(audio.shape[0]),
        "timings_s": {
            "prompt": round(result.prompt_s, 4),
            "frames": round(result.frames_s, 4),
            "decode": round(result.decode_s, 4),
            "total": round(result.total_s, 4),
        },
        "frames_per_s": round(result.frames_per_s, 2),
        "peak_memory_bytes": result.peak_memory_bytes,
        "device": result.device,
        "software": {"torch": torch.__version__, "python": platform.python_version()},
        **({"parent": result.parent} if getattr(result, "parent", None) else {}),
    }


def codes_bytes(frames: np.ndarray) -> bytes:
    """A take's frames as .npy bytes ([n, 8] int64; never pickled)."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(frames, dtype=np.int64), allow_pickle=False)
    return buf.getvalue()


def load_codes(path: str | Path) -> np.ndarray:
    """A take's frames from its .npy, checked: [n, 8] integers; ValueError names the file."""
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # the file's name only: the server's folders are not the user's
        raise ValueError(f"{Path(path).name}: the song's codes cannot be read (the file is damaged), so it can be "
                         "played but not extended or regenerated") from e
    if codes.ndim != 2 or codes.shape[1] != 8 or codes.shape[0] < 1 or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{Path(path).name}: not a song's codes ([frames, 8] integers), found {codes.dtype} "
                         f"{list(codes.shape)}")
    return codes.astype(np.int64)


def save_take(result, take: int, path: str | Path) -> tuple[Path, Path]:
    """Write take `take` to `path` (.wav/.flac/.mp3) and its sidecar beside it, atomically.

    The audio is written first, so a listed sidecar always has its audio; if the sidecar
    cannot be written the audio is removed again. A failed write (a full disk) raises a
    RuntimeError that names the file and the reason."""
    path = Path(path)
    side = sidecar_path(path)
    codes = path.with_suffix(CODES_SUFFIX)
    try:
        write_audio(path, result.audio[take], result.sample_rate)
        meta = song_metadata(result, take)
        meta["audio_file"] = path.name
        try:
            atomic_write_bytes(codes, codes_bytes(result.frames[take]))
            meta["codes_file"] = codes.name
            atomic_write_bytes(side, json.dumps(meta, indent=2, ensure_ascii=False).encode("utf-8"))
        except BaseException:
            path.unlink(missing_ok=True)
            codes.unlink(missing_ok=True)
            raise
    except OSError as e:
        raise RuntimeError(f"could not save {path}: {e.strerror or e}; nothing was kept for this take") from e
    return path, side


def take_paths(path: str | Path, takes: int) -> list[Path]:
    """song.mp3 for one take; song_take1.mp3, song_take2.mp3, ... for several."""
    path = Path(path)
    if takes == 1:
        return [path]
    return [path.with_name(f"{path.stem}_take{i + 1}{path.suffix}") for i in range(takes)]


def save_frames(path: str | Path, frames: list[np.ndarray]) -> Path:
    """[takes, frames, 8] int64 .npy; takes of unequal length are padded with -1."""
    n = max(len(f) for f in frames)
    k = frames[0].shape[1]
    arr = np.full((len(frames), n, k), -1, dtype=np.int64)
    for i, f in enumerate(frames):
        arr[i, : len(f)] = f
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def parse_clock(text: str) -> float:
    """A time as people write it, "1:20", "1:20.5", "0:02" or "80", -> seconds."""
    value = str(text).strip()
    try:
        if ":" in value:
            minutes, seconds = value.split(":")
            if not minutes.strip().isdigit() or float(seconds) < 0 or float(seconds) >= 60:
                raise ValueError
            total = int(minutes) * 60 + float(seconds)
        else:
            total = float(value)
    except ValueError:
        raise ValueError(f"time {text!r}: write it as m:ss (e.g. 1:20) or seconds (e.g. 80)") from None
    if not total >= 0 or total == float("inf"):
        raise ValueError(f"time {text!r} must be 0 or more")
    return total


def clock(seconds: float) -> str:
    """Seconds -> m:ss.ss, as parse_clock reads it."""
    return f"{int(seconds // 60)}:{seconds % 60:05.2f}"


@dataclass(frozen=True)
class Continuation:
    """What `Engine.generate` needs to extend a saved take or regenerate it from a point."""

    lyrics: str
    tags: str
    options: object  # GenerateOptions
    kept: np.ndarray  # [F, 8]: the frames kept
    codec_seeds: list  # the parent's codec noise for every take, so its kept windows sound the same
    parent: dict  # named in the new sidecar: the parent's sidecar and id, the mode, the branch point


def plan_continuation(meta: dict, frames: np.ndarray, mode: str, *, parent_id: str, seconds: float | None = None,
                      at: str | float | None = None, takes: int = 1, seed: int | None = None,
                      lyrics: str | None = None, tags: str | None = None, ignore_eos: bool = False) -> Continuation:
    """A saved take (its sidecar `meta` and its codes) -> how to extend it by `seconds`
    ("extend", same seed) or redo it from `at` (m:ss or seconds; "regenerate", `takes` new
    takes from `seed`, None for a fresh one). ValueError gives the allowed range."""
    from dataclasses import replace

    from ..audio import FRAME_MS
    from ..mula.generate import GenerateOptions
    from ..options import options_of

    n = len(frames)
    names = options_of(GenerateOptions)
    try:
        opts = GenerateOptions(**{k: v for k, v in (meta.get("options") or {}).items() if k in names})
    except (TypeError, ValueError) as e:
        raise ValueError(f"the song's options cannot be used ({e})") from e
    parent_seed = meta.get("seed")
    if not isinstance(parent_seed, int) or isinstance(parent_seed, bool):
        raise ValueError("the song has no seed to continue from")
    if mode == "extend":
        if seconds is None or not seconds > 0:
            raise ValueError(f"seconds to add: give more than 0, got {seconds!r}")
        longest = names["max_audio_length_ms"].hi
        room = (longest - n * FRAME_MS) / 1000
        if seconds * 1000 < FRAME_MS:
            raise ValueError(f"seconds to add: give at least {FRAME_MS / 1000:g} (one frame), got {seconds:g}")
        if n * FRAME_MS + seconds * 1000 > longest:
            raise ValueError(f"seconds to add: the song is {clock(n * FRAME_MS / 1000)} long and a song can be at most "
                             f"{clock(longest / 1000)}; add at most {max(room, 0):.2f} s, got {seconds:g}")
        cut = n
        opts = replace(opts, max_audio_length_ms=n * FRAME_MS + int(round(seconds * 1000)), takes=1,
                       seed=parent_seed, ignore_eos=opts.ignore_eos or ignore_eos)
    elif mode == "regenerate":
        at_s = parse_clock(at) if isinstance(at, str) else float(at if at is not None else -1)
        cut = int(round(at_s * 1000 / FRAME_MS))
        if not 1 <= cut < n:
            raise ValueError(f"time {at}: the song is {clock(n * FRAME_MS / 1000)} long; give a time from "
                             f"{clock(FRAME_MS / 1000)} to {clock((n - 1) * FRAME_MS / 1000)}")
        opts = replace(opts, max_audio_length_ms=max(opts.max_audio_length_ms, n * FRAME_MS), takes=takes, seed=seed)
    else:
        raise ValueError(f"mode must be extend or regenerate, got {mode!r}")
    return Continuation(
        lyrics=str(meta.get("lyrics", "")) if lyrics is None else lyrics,
        tags=str(meta.get("tags", "")) if tags is None else tags,
        options=opts, kept=frames[:cut], codec_seeds=[parent_seed] * opts.takes,
        parent={"sidecar": f"{parent_id}.json", "id": parent_id, "mode": mode, "from_frame": cut,
                "at_s": round(cut * FRAME_MS / 1000, 3)})
