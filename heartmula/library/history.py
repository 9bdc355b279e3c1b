"""Song history: every generated take kept on disk with its JSON sidecar, listed newest first.

The folder (the studio's `--output-dir`, default ./outputs) is the database: each take is
`<stem>.wav` (plus `<stem>.mp3` and `<stem>.flac` for download) and `<stem>.json`, the
sidecar of `heartmula.library.songs.song_metadata`. Audio is written first and the sidecar last,
each atomically, so a listed sidecar always has its audio and a crash (or a stopped job,
which never reaches saving) leaves nothing that lists. A sidecar that does not parse, or
holds a field of the wrong type or range, is skipped with a warning naming the file (and kept
in `History.skipped`), never fatal: listing is total. Nothing here knows about the UI.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..audio import WRITE_FORMATS, atomic_write_bytes, write_audio
from .index import Entry, SongIndex, clean_title
from .songs import CODES_SUFFIX, codes_bytes, load_codes, sidecar_path, song_metadata

log = logging.getLogger(__name__)

FORMATS = ("wav", "mp3", "flac")  # the first is the one played; all are offered for download
# A sidecar is a few KiB (lyrics are bounded by the model's context); anything far larger is not ours
# and is refused before it is parsed, so one planted file cannot make every listing slow.
MAX_SIDECAR_BYTES = 1024 * 1024


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
        if self.codes_path is None:
            raise ValueError(f"song {self.id} was saved without its codes (before they were kept), so it can "
                             "be played but not extended or regenerated")
        if not self.codes_path.is_file():
            raise ValueError(f"song {self.id}: its codes file {self.codes_path.name} is missing, so it can be played "
                             "but not extended or regenerated")
        return load_codes(self.codes_path)

    def label(self) -> str:
        when = self.created.replace("T", " ")[:19]
        tags = self.tags if len(self.tags) <= 40 else self.tags[:39] + "…"
        take = f" take {self.take + 1}" if self.meta.get("takes", 1) > 1 else ""  # takes checked by _song
        return f"{when} · {tags} · {self.duration_s:.1f} s · seed {self.seed}{take}"


class SongGone(ValueError):
    """No sidecar for this id any more: the song was deleted (by another tab, window or process)
    after whoever asks listed it."""

    def __init__(self, song_id: str):
        super().__init__(f"no song {song_id!r} in the history (it may have been deleted)")
        self.song_id = song_id


class MissingAudio(ValueError):
    """A sidecar whose audio file is not there (the index reads it again when the file appears)."""

    def __init__(self, audio_file: str):
        super().__init__(f"its audio file {audio_file} is missing")
        self.audio_file = audio_file


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short_text(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value) -> str:
    """A sidecar value for an error message, cut short (it may be megabytes)."""
    return _short_text(repr(value), 60)


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
        self.skipped: list[tuple[Path, str]] = []  # (sidecar, reason) of the last scan
        self.index = SongIndex(self.folder, self._read)  # listing and search; built from the sidecars

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
        # Every field is checked here, so a Song that exists can be labelled, sorted and shown
        # without another check: a sidecar is user-editable data, never trusted.
        if not isinstance(meta, dict) or "audio_file" not in meta or "sidecar_version" not in meta:
            raise ValueError("not a song sidecar (no audio_file / sidecar_version)")
        audio_file = meta["audio_file"]
        if not isinstance(audio_file, str) or not audio_file:
            raise ValueError(f"audio_file is {audio_file!r}; it must be a file name")
        audio = side.parent / Path(audio_file).name
        if not audio.is_file():
            raise MissingAudio(audio.name)
        options = meta.get("options") or {}
        if not isinstance(options, dict):
            raise ValueError("options is not a mapping")
        exports = meta.get("exports") or []
        if not isinstance(exports, list) or not all(isinstance(e, str) for e in exports):
            raise ValueError(f"exports is {_short(exports)}; it must be a list of file names")
        for key in ("created", "lyrics", "tags"):
            if not isinstance(meta.get(key, ""), str):
                raise ValueError(f"{key} is {_short(meta[key])}; it must be text")
        seed = meta.get("seed")
        if seed is not None and not _is_int(seed):
            raise ValueError(f"seed is {_short(seed)}; it must be a whole number or null")
        take, takes = meta.get("take", 0), meta.get("takes", 1)
        if not _is_int(takes) or takes < 1:
            raise ValueError(f"takes is {_short(takes)}; it must be a whole number >= 1")
        if not _is_int(take) or not 0 <= take < takes:
            raise ValueError(f"take is {_short(take)}; it must be a whole number from 0 to takes - 1 ({takes - 1})")
        duration_s = meta.get("duration_s", 0.0)
        if not _is_number(duration_s) or not 0 <= duration_s < 1e9:
            raise ValueError(f"duration_s is {_short(duration_s)}; it must be a finite number of seconds >= 0")
        return Song(
            id=side.stem,
            audio_path=audio,
            sidecar_path=side,
            created=meta.get("created", ""),
            lyrics=meta.get("lyrics", ""),
            tags=meta.get("tags", ""),
            seed=seed,
            take=take,
            duration_s=float(duration_s),
            options=options,
            meta=meta,
        )

    def _read(self, side: Path) -> Song:
        """The Song of one sidecar, or ValueError saying why it cannot be one (never another error)."""
        try:
            with open(side, "rb") as f:
                raw = f.read(MAX_SIDECAR_BYTES + 1)
            if len(raw) > MAX_SIDECAR_BYTES:
                raise ValueError(f"larger than {MAX_SIDECAR_BYTES // 1024} KiB; a song sidecar is a few KiB")
            return self._song(side, json.loads(raw.decode("utf-8")))
        except ValueError:  # JSONDecodeError and UnicodeDecodeError included
            raise
        except OSError as e:
            raise ValueError(e.strerror or str(e)) from e
        except RecursionError as e:
            raise ValueError("JSON nested too deeply") from e
        except Exception as e:  # total: whatever the file holds, History still lists the others
            raise ValueError(f"{type(e).__name__}: {e}") from e

    def scan(self) -> tuple[list[Song], list[str]]:
        """(songs newest first, one warning per sidecar skipped). The skipped files are also
        kept in `self.skipped` as (path, reason), for a count in the UI."""
        songs, warnings, skipped = [], [], []
        if self.folder.is_dir():
            for side in self.folder.glob("*.json"):
                try:
                    songs.append(self._read(side))
                except ValueError as e:
                    msg = f"{side.name}: skipped ({_short_text(str(e))})"
                    log.warning("history: %s in %s", msg, self.folder)
                    warnings.append(msg)
                    skipped.append((side, str(e)))
        songs.sort(key=lambda s: (s.created, s.id), reverse=True)
        self.skipped = sorted(skipped)
        return songs, warnings

    def list(self) -> list[Song]:
        return self.scan()[0]

    # ----- the library: titles, favourites, search (through the index) ------------------------
    def find(self, query: str = "", *, favourites: bool = False, limit: int | None = None,
             ids: list[str] | None = None) -> tuple[list[Entry], int]:
        """(entries newest first, how many match) for a search over title, tags and lyrics;
        the index is first brought in step with the folder (new, changed, deleted sidecars).
        Sidecars that cannot be listed are kept in `self.skipped`."""
        skipped = self.index.sync()
        self.skipped = [(self.folder / name, reason) for name, reason in skipped]
        return self.index.find(query, favourites=favourites, limit=limit, ids=ids)

    def set_title(self, song_id: str, title: str) -> Song:
        """Give a song a title (blank: back to its first lyric line)."""
        title = clean_title(title)
        return self._update(song_id, title=title or None)

    def set_favourite(self, song_id: str, favourite: bool) -> Song:
        return self._update(song_id, favourite=True if favourite else None)

    def _update(self, song_id: str, **fields) -> Song:
        """Rewrite a song's sidecar (atomically) with `fields` set, or removed where None: the
        sidecar is the library's source of truth, the index follows it."""
        song = self.get(song_id)
        meta = dict(song.meta)
        for key, value in fields.items():
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        try:
            atomic_write_bytes(song.sidecar_path, json.dumps(meta, indent=2, ensure_ascii=False).encode("utf-8"))
        except OSError as e:
            raise RuntimeError(f"could not update {song.sidecar_path}: {e.strerror or e} (check the folder's "
                               "permissions and free space)") from e
        return self._song(song.sidecar_path, meta)

    def family(self, song_id: str) -> list[str]:
        """The song, the songs it was made from and every song made from any of them, oldest
        first: a song and its variants (extensions, regenerations)."""
        self.find(limit=0)  # in step with the folder
        root, seen = song_id, {song_id}
        while (parent := self.index.parent_of(root)) and parent not in seen:
            seen.add(parent)
            root = parent
        out, todo = [], [root]
        while todo:
            node = todo.pop(0)
            if node in out:
                continue
            out.append(node)
            todo += self.index.children(node)
        return out

    def get(self, song_id: str) -> Song:
        side = self._sidecar_of(song_id)
        try:
            return self._read(side)
        except ValueError as e:
            raise ValueError(f"song {song_id!r} cannot be read: {_short_text(str(e))}") from e

    def _sidecar_of(self, song_id: str) -> Path:
        if not isinstance(song_id, str) or not song_id or Path(song_id).name != song_id or song_id.startswith("."):
            raise ValueError(f"no song {song_id!r} in the history")
        side = self.folder / f"{song_id}.json"
        if not side.is_file():
            raise SongGone(song_id)
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
