"""Song history: every generated take kept on disk with its JSON sidecar, listed newest first.

The folder (the studio's `--output-dir`, default ./outputs) is the database: each take is
`<stem>.wav` (plus `<stem>.mp3` and `<stem>.flac` for download) and `<stem>.json`, the
sidecar of `heartmula.library.songs.song_metadata`. Audio is written first and the sidecar last,
each atomically, so a listed sidecar always has its audio and a crash (or a stopped job,
which never reaches saving) leaves nothing that lists. A sidecar that does not parse is
skipped with a warning, never fatal. Nothing here knows about the UI.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..audio import WRITE_FORMATS, atomic_write_bytes, write_audio
from .songs import CODES_SUFFIX, codes_bytes, load_codes, sidecar_path, song_metadata

log = logging.getLogger(__name__)

FORMATS = ("wav", "mp3", "flac")  # the first is the one played; all are offered for download


@dataclass(frozen=True)
class Song:
    """One take on disk, as its sidecar describes it."""

    id: str  # the file stem, unique in the folder; sorts by creation time
    audio_path: Path  # the played file (.wav)
    sidecar_path: Path
    created: str  # ISO time, UTC
    lyrics: str
    tags: str
    seed: int | None
    take: int
    duration_s: float
    options: dict  # GenerateOptions fields, seed included
    meta: dict = field(repr=False)  # the whole sidecar

    @property
    def downloads(self) -> list[Path]:
        """Every file of this take that exists: the audio formats, then the sidecar."""
        paths = [self.audio_path.with_suffix(f".{fmt}") for fmt in FORMATS]
        return [p for p in paths if p.is_file()] + [self.sidecar_path]

    @property
    def codes_path(self) -> Path | None:
        """The take's frames (.npy), where it was saved with them."""
        name = self.meta.get("codes_file")
        return self.sidecar_path.parent / Path(name).name if isinstance(name, str) and name else None

    def frames(self):
        """The take's frames [n, 8], to extend it or regenerate it from a point."""
        if self.codes_path is None or not self.codes_path.is_file():
            raise ValueError(f"song {self.id} was saved without its codes (before they were kept), so it can "
                             "be played but not extended or regenerated")
        return load_codes(self.codes_path)

    def label(self) -> str:
        when = self.created.replace("T", " ")[:19]
        tags = self.tags if len(self.tags) <= 40 else self.tags[:39] + "…"
        take = f" take {self.take + 1}" if self.meta.get("takes", 1) > 1 else ""
        return f"{when} · {tags} · {self.duration_s:.1f} s · seed {self.seed}{take}"


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _new_stem() -> str:
    # Local time to the millisecond, then randomness: sorts by creation, never collides.
    return datetime.now().strftime("%Y%m%d-%H%M%S-%f")[:-3] + "-" + secrets.token_hex(2)


class History:
    """The songs in one folder. Cheap to create: the listing is read from disk every time,
    so a new History on the same folder (after a restart) sees every song."""

    def __init__(self, folder: str | Path = "./outputs", formats: tuple[str, ...] = FORMATS):
        self.folder = Path(folder).expanduser()
        for fmt in formats:
            if f".{fmt}" not in WRITE_FORMATS:
                raise ValueError(f"format {fmt!r} is not supported; use one of {', '.join(FORMATS)}")
        self.formats = tuple(formats)

    # ----- writing ------------------------------------------------------------------------
    def save(self, result, *, stem: str | None = None) -> list[Song]:
        """Write every take of a GenerateResult; returns them in take order.

        All or nothing: every take's audio first, then the sidecars. If any write fails
        (a full disk, a lost mount) every file of this save is removed again, so no take
        of it lists, and the error says what happened."""
        stem = stem or _new_stem()
        n = len(result.audio)
        written: list[Path] = []
        planned = []
        try:
            for take in range(n):
                base = self.folder / (stem if n == 1 else f"{stem}-take{take + 1}")
                files = []
                for fmt in self.formats:
                    files.append(write_audio(base.with_suffix(f".{fmt}"), result.audio[take], result.sample_rate))
                    written.append(files[-1])
                codes = atomic_write_bytes(base.with_suffix(CODES_SUFFIX), codes_bytes(result.frames[take]))
                written.append(codes)
                planned.append((take, files, codes))
            songs = []
            for take, files, codes in planned:
                meta = song_metadata(result, take)
                meta["audio_file"] = files[0].name
                meta["exports"] = [p.name for p in files[1:]]
                meta["codes_file"] = codes.name
                side = sidecar_path(files[0])
                atomic_write_bytes(side, json.dumps(meta, indent=2, ensure_ascii=False).encode("utf-8"))
                written.append(side)
                songs.append(self._song(side, meta))
        except BaseException as e:
            for path in reversed(written):  # sidecars first: nothing lists while audio is removed
                _remove_quietly(path)
            if isinstance(e, OSError):
                raise RuntimeError(
                    f"could not save the song in {self.folder}: {e.strerror or e}; nothing was kept "
                    "(free some disk space or check the folder, then generate again)"
                ) from e
            raise
        return songs

    # ----- reading ------------------------------------------------------------------------
    def _song(self, side: Path, meta: dict) -> Song:
        if not isinstance(meta, dict) or "audio_file" not in meta or "sidecar_version" not in meta:
            raise ValueError("not a song sidecar (no audio_file / sidecar_version)")
        audio = side.parent / Path(str(meta["audio_file"])).name
        if not audio.is_file():
            raise ValueError(f"its audio file {audio.name} is missing")
        options = meta.get("options") or {}
        if not isinstance(options, dict):
            raise ValueError("options is not a mapping")
        return Song(
            id=side.stem,
            audio_path=audio,
            sidecar_path=side,
            created=str(meta.get("created", "")),
            lyrics=str(meta.get("lyrics", "")),
            tags=str(meta.get("tags", "")),
            seed=meta.get("seed"),
            take=int(meta.get("take", 0)),
            duration_s=float(meta.get("duration_s", 0.0)),
            options=options,
            meta=meta,
        )

    def scan(self) -> tuple[list[Song], list[str]]:
        """(songs newest first, one warning per sidecar skipped)."""
        songs, warnings = [], []
        if not self.folder.is_dir():
            return songs, warnings
        for side in self.folder.glob("*.json"):
            try:
                meta = json.loads(side.read_text(encoding="utf-8"))
                songs.append(self._song(side, meta))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as e:
                msg = f"{side.name}: skipped ({e})"
                log.warning("history: %s", msg)
                warnings.append(msg)
        songs.sort(key=lambda s: (s.created, s.id), reverse=True)
        return songs, warnings

    def list(self) -> list[Song]:
        return self.scan()[0]

    def get(self, song_id: str) -> Song:
        side = self._sidecar_of(song_id)
        try:
            return self._song(side, json.loads(side.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, ValueError, TypeError) as e:
            raise ValueError(f"song {song_id!r} cannot be read: {e}") from e

    def _sidecar_of(self, song_id: str) -> Path:
        if not isinstance(song_id, str) or not song_id or Path(song_id).name != song_id or song_id.startswith("."):
            raise ValueError(f"no song {song_id!r} in the history")
        side = self.folder / f"{song_id}.json"
        if not side.is_file():
            raise ValueError(f"no song {song_id!r} in the history (it may have been deleted)")
        return side

    # ----- deleting -----------------------------------------------------------------------
    def delete(self, song_id: str) -> list[Path]:
        """Remove a take: the sidecar first (so it stops listing), then its audio files."""
        side = self._sidecar_of(song_id)
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
            named = [meta.get("audio_file"), *(meta.get("exports") or []), meta.get("codes_file")]
        except (OSError, json.JSONDecodeError, AttributeError):
            named = []
        candidates = {side.with_suffix(f".{fmt}") for fmt in (*FORMATS, CODES_SUFFIX.lstrip("."))}
        candidates |= {self.folder / Path(str(n)).name for n in named if n}
        side.unlink()
        removed = [side]
        for p in sorted(candidates):
            if p.is_file() and p.stem == song_id:
                p.unlink()
                removed.append(p)
        return removed
