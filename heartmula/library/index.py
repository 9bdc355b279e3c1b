"""The song library's index: one sqlite database beside the songs, built from their sidecars.

The sidecars stay the source of truth. A title or a favourite is written to the sidecar
first and the index follows, so deleting the database loses nothing: the next listing
builds it again. Every listing first compares the folder (one directory read, one stat per
sidecar) with what the index holds, and re-reads only the sidecars that are new, changed or
whose audio came or went; that keeps a listing of thousands of songs to milliseconds while
songs saved by another process (the CLI) still show up at once.

Search uses FTS5 where this sqlite has it (prefix match on every word, over title, tags and
lyrics), and LIKE on each word where it does not; a whole number also matches a seed, and a
query with no word in it ("(") is looked for as written. The database lives in the songs' folder
(`.heartmula-library.sqlite3`); where that folder cannot be written, in memory.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

DB_NAME = ".heartmula-library.sqlite3"
SCHEMA_VERSION = 1  # bump when the tables change: an older database is then built afresh
TITLE_MAX = 120  # characters; a title is one line shown in a table cell
_SECTION = re.compile(r"^\s*\[[^\]]*\]\s*$")  # a lyric line that is only a section tag: [verse]

_SCHEMA = """
CREATE TABLE songs (
    id TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, audio_file TEXT,
    created TEXT, title TEXT, tags TEXT, lyrics TEXT, seed TEXT, take INTEGER, takes INTEGER,
    duration_s REAL, favourite INTEGER, parent_id TEXT, parent_mode TEXT, parent_at_s REAL,
    has_codes INTEGER);
CREATE INDEX songs_newest ON songs (created DESC, id DESC);
CREATE INDEX songs_parent ON songs (parent_id);
CREATE TABLE skipped (id TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, audio_file TEXT, reason TEXT);
"""
_FTS = "CREATE VIRTUAL TABLE songs_fts USING fts5(id UNINDEXED, title, tags, lyrics, tokenize='unicode61')"


def default_title(lyrics: str, tags: str = "") -> str:
    """A song's title until someone gives it one: its first sung line, else its tags."""
    for line in (lyrics or "").splitlines():
        if line.strip() and not _SECTION.match(line):
            return clean_title(line)
    return clean_title(tags) or "Untitled"


def clean_title(text: str) -> str:
    """One line, spaces collapsed, at most TITLE_MAX characters."""
    text = " ".join(str(text or "").split())
    return text if len(text) <= TITLE_MAX else text[: TITLE_MAX - 1] + "…"


@dataclass(frozen=True)
class Entry:
    """One song as the library lists it (what a table row and a search need)."""

    id: str
    title: str
    tags: str
    created: str
    duration_s: float
    seed: int | None
    take: int
    takes: int
    favourite: bool
    parent_id: str | None
    parent_mode: str | None
    parent_at_s: float | None
    has_codes: bool


_ENTRY_COLUMNS = ("id, title, tags, created, duration_s, seed, take, takes, favourite, parent_id, parent_mode, "
                  "parent_at_s, has_codes")


def _entry(row) -> Entry:
    (id_, title, tags, created, duration_s, seed, take, takes, fav, parent_id, parent_mode, parent_at_s,
     has_codes) = row
    return Entry(id=id_, title=title, tags=tags, created=created, duration_s=duration_s,
                 seed=None if seed is None else int(seed), take=take, takes=takes, favourite=bool(fav),
                 parent_id=parent_id, parent_mode=parent_mode, parent_at_s=parent_at_s, has_codes=bool(has_codes))


def search_words(query: str) -> list[str]:
    """The words of a search box, lower-cased: runs of letters and digits, as the FTS tokenizer
    cuts them (punctuation, "_" and FTS operators are not words)."""
    return re.findall(r"[^\W_]+", (query or "").lower())


def _like(text: str) -> str:
    """`text` anywhere, for LIKE ... ESCAPE '\\' (its % and _ are themselves)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class SongIndex:
    """The index of one folder. `read(side)` turns a sidecar into a Song or raises ValueError
    (History._read); the index never parses sidecars itself, so it lists exactly what History
    accepts. Thread-safe: one connection, one lock."""

    def __init__(self, folder: Path, read: Callable):
        self.folder = Path(folder)
        self._read = read
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self.fts = False
        self.location = ""  # the database file, or ":memory:"

    # ----- the database -----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if not self.folder.is_dir():  # nothing saved yet: an empty index, until the folder exists
            return self._open(":memory:")
        path = self.folder / DB_NAME
        try:
            db = self._open(path)
        except (sqlite3.Error, OSError) as e:
            # A read-only folder, or a database that is not one: lists from memory this time
            # (a broken file is replaced: everything in it came from the sidecars).
            if isinstance(e, sqlite3.DatabaseError) and path.is_file():
                log.warning("library: %s is damaged (%s); building it again from the sidecars", path, e)
                try:
                    path.unlink()
                    db = self._open(path)
                except (sqlite3.Error, OSError) as e2:
                    log.info("library: cannot write %s (%s); keeping the index in memory", path, e2)
                    db = self._open(":memory:")
            else:
                log.info("library: cannot write %s (%s); keeping the index in memory", path, e)
                db = self._open(":memory:")
        self._db = db
        return db

    def _open(self, path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), check_same_thread=False, timeout=10, isolation_level=None)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if version != SCHEMA_VERSION or "songs" not in tables:
                for table in ("songs_fts", "songs", "skipped"):
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                db.executescript(_SCHEMA)
                try:
                    db.execute(_FTS)
                except sqlite3.OperationalError:  # this sqlite has no FTS5: LIKE searches instead
                    pass
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.fts = "songs_fts" in {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except BaseException:
            db.close()
            raise
        self.location = str(path)
        return db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # ----- keeping it in step with the folder -------------------------------------------------
    def sync(self) -> list[tuple[str, str]]:
        """Bring the index in step with the folder; returns (sidecar name, reason) per skipped file."""
        with self._lock:
            try:
                return self._sync(self._connect())
            except sqlite3.DatabaseError as e:  # damaged while open: start over from the sidecars
                log.warning("library: index error (%s); building it again from the sidecars", e)
                self._drop()
                return self._sync(self._connect())

    def _drop(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self.location and self.location != ":memory:":
            try:
                Path(self.location).unlink()
            except OSError:
                pass

    def _sync(self, db: sqlite3.Connection) -> list[tuple[str, str]]:
        files: dict[str, tuple[int, int]] = {}
        present: set[str] = set()
        if self.folder.is_dir():
            with os.scandir(self.folder) as it:
                for e in it:
                    present.add(e.name)
                    if e.name.endswith(".json"):
                        try:
                            st = e.stat()
                        except OSError:
                            continue
                        files[e.name[:-5]] = (st.st_mtime_ns, st.st_size)
        listed = {r[0]: r[1:] for r in db.execute("SELECT id, mtime_ns, size, audio_file FROM songs")}
        skipped = {r[0]: r[1:] for r in db.execute("SELECT id, mtime_ns, size, audio_file FROM skipped")}
        stale = []
        for id_, stamp in files.items():
            if id_ in listed:
                mtime, size, audio = listed[id_]
                if (mtime, size) != stamp or audio not in present:
                    stale.append(id_)
            elif id_ in skipped:
                mtime, size, audio = skipped[id_]
                if (mtime, size) != stamp or (audio and audio in present):  # its missing audio is back
                    stale.append(id_)
            else:
                stale.append(id_)
        gone = [i for i in (*listed, *skipped) if i not in files]
        if stale or gone:
            db.execute("BEGIN")
            try:
                for id_ in gone + stale:
                    self._forget(db, id_)
                for id_ in stale:
                    self._add(db, id_, files[id_], present)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return [(f"{i}.json", reason) for i, reason in db.execute("SELECT id, reason FROM skipped ORDER BY id")]

    def _forget(self, db, id_: str) -> None:
        db.execute("DELETE FROM songs WHERE id = ?", (id_,))
        db.execute("DELETE FROM skipped WHERE id = ?", (id_,))
        if self.fts:
            db.execute("DELETE FROM songs_fts WHERE id = ?", (id_,))

    def _add(self, db, id_: str, stamp: tuple[int, int], present: set[str]) -> None:
        side = self.folder / f"{id_}.json"
        try:
            song = self._read(side)
        except ValueError as e:
            audio = getattr(e, "audio_file", None)  # History's MissingAudio: re-read when it appears
            log.warning("history: %s.json: skipped (%s) in %s", id_, str(e)[:200], self.folder)
            db.execute("INSERT INTO skipped VALUES (?, ?, ?, ?, ?)", (id_, *stamp, audio, str(e)[:500]))
            return
        meta = song.meta
        title = meta.get("title")
        title = clean_title(title) if isinstance(title, str) and title.strip() else default_title(song.lyrics, song.tags)
        parent = meta.get("parent") if isinstance(meta.get("parent"), dict) else {}
        parent_id = parent.get("id") if isinstance(parent.get("id"), str) else None
        mode = parent.get("mode") if isinstance(parent.get("mode"), str) else None
        at_s = parent.get("at_s")
        at_s = float(at_s) if isinstance(at_s, (int, float)) and not isinstance(at_s, bool) else None
        codes = song.codes_path
        row = (song.id, *stamp, song.audio_path.name, song.created, title, song.tags, song.lyrics,
               None if song.seed is None else str(song.seed), song.take, int(meta.get("takes", 1)), song.duration_s,
               int(meta.get("favourite") is True), parent_id, mode, at_s,
               int(codes is not None and codes.name in present))
        db.execute(f"INSERT INTO songs VALUES ({', '.join('?' * len(row))})", row)
        if self.fts:
            db.execute("INSERT INTO songs_fts VALUES (?, ?, ?, ?)", (song.id, title, song.tags, song.lyrics))

    # ----- asking it --------------------------------------------------------------------------
    def find(self, query: str = "", *, favourites: bool = False, limit: int | None = None,
             ids: list[str] | None = None) -> tuple[list[Entry], int]:
        """(entries newest first, how many match in all) for a search over title, tags and
        lyrics (every word must match, as a word prefix; a whole number also matches a seed
        exactly), optionally favourites only, or only the songs `ids`. A query with no word
        ("(", "%": no letter or digit) is looked for as written: listing every song as its
        match would say the search found them. Call `sync` first for a listing that includes the
        latest files."""
        words = search_words(query)
        literal = (query or "").strip() if not words else ""
        where, args = [], []
        if favourites:
            where.append("favourite = 1")
        if ids is not None:
            where.append(f"id IN ({', '.join('?' * len(ids))})")
            args += list(ids)
        with self._lock:
            db = self._connect()
            for w in words:
                if self.fts:
                    match = "id IN (SELECT id FROM songs_fts WHERE songs_fts MATCH ?)"
                    args.append(f'"{w}"*')
                else:
                    match = "(title || ' ' || tags || ' ' || lyrics) LIKE ? ESCAPE '\\'"
                    args.append(_like(w))
                if w.isascii() and w.isdigit():  # a seed, as the table shows it (no leading zeros)
                    match = f"({match} OR seed = ?)"
                    args.append(str(int(w)))
                where.append(match)
            if literal:
                # no letter or digit in it, so no case to ignore: a plain substring test
                where.append("instr(title || ' ' || tags || ' ' || lyrics, ?) > 0")
                args.append(literal)
            clause = f" WHERE {' AND '.join(where)}" if where else ""
            total = db.execute(f"SELECT count(*) FROM songs{clause}", args).fetchone()[0]
            page = f" LIMIT {int(limit)}" if limit is not None else ""
            rows = db.execute(f"SELECT {_ENTRY_COLUMNS} FROM songs{clause} ORDER BY created DESC, id DESC{page}",
                              args).fetchall()
        return [_entry(r) for r in rows], total

    def children(self, parent_id: str) -> list[str]:
        with self._lock:
            rows = self._connect().execute("SELECT id FROM songs WHERE parent_id = ? ORDER BY created, id",
                                           (parent_id,)).fetchall()
        return [r[0] for r in rows]

    def parent_of(self, song_id: str) -> str | None:
        with self._lock:
            row = self._connect().execute("SELECT parent_id FROM songs WHERE id = ?", (song_id,)).fetchone()
        return row[0] if row else None
