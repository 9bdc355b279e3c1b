"""Clearing what a crash or a hand edit leaves behind: run at start-up (app.py) and, for the
temporary tree, whenever the studio hands out a temporary path.

- `<name>.<random>.part` in the outputs folder: atomic_write_bytes/write_audio's temporaries of a
  write that never reached its rename (the process was killed mid-save).
- Orphaned audio: `<stem>.wav/.mp3/.flac` without `<stem>.json`. History never lists it (a sidecar
  is written last), so nothing in the studio can show, download or delete it: it only fills the disk.
Both only once older than ORPHAN_MIN_AGE_S, so a save in progress in another process (audio
written, sidecar not yet) is never touched. Links are never followed nor removed.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

from .history import FORMATS

log = logging.getLogger(__name__)

# A save writes every take's audio, then the sidecars: seconds apart at most.
ORPHAN_MIN_AGE_S = 60.0


def _is_old_regular_file(path: Path, older_than: float) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_mtime < older_than


def _remove(path: Path, why: str, removed: list[Path]) -> None:
    try:
        path.unlink()
    except OSError as e:
        log.warning("sweep: could not remove %s (%s): %s", path, why, e.strerror or e)
        return
    removed.append(path)


def sweep_outputs(folder: str | Path, *, min_age_s: float = ORPHAN_MIN_AGE_S) -> list[Path]:
    """Remove .part leftovers and orphaned audio older than `min_age_s` from the top level of
    `folder` (History is flat); returns what was removed. Other files are left alone."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:  # no folder yet: nothing to sweep
        return removed
    older_than = time.time() - min_age_s
    for path in entries:
        if path.suffix == ".part":
            why = "an unfinished write"
        elif path.suffix[1:] in FORMATS and not os.path.lexists(path.with_suffix(".json")):
            why = "audio without its sidecar"
        else:
            continue
        if _is_old_regular_file(path, older_than):
            _remove(path, why, removed)
    if removed:
        log.info("sweep: removed %d leftover file(s) from %s: %s", len(removed), folder,
                 ", ".join(p.name for p in removed[:10]) + (" ..." if len(removed) > 10 else ""))
    return removed


def prune_tree(root: str | Path, max_age_s: float) -> list[Path]:
    """Remove every file under `root`, at any depth, last modified more than `max_age_s` ago,
    then the folders that are left empty and were already that old before (a folder made a
    moment ago for a file about to be written is kept). `root` itself stays."""
    root = Path(root)
    older_than = time.time() - max_age_s
    removed: list[Path] = []
    # Folder ages first: removing a file inside a folder makes the folder look new.
    walk = list(os.walk(root, topdown=True, followlinks=False))
    old_dirs = {Path(d) for d, _, _ in walk if Path(d) != root and _mtime(Path(d)) < older_than}
    for dirpath, _dirnames, filenames in reversed(walk):  # deepest first
        folder = Path(dirpath)
        for name in filenames:
            path = folder / name
            try:
                old = path.lstat().st_mtime < older_than  # a link counts by its own age
            except OSError:
                continue
            if old:
                _remove(path, "an old temporary", removed)
        if folder in old_dirs:
            try:
                folder.rmdir()  # only if empty
                removed.append(folder)
            except OSError:
                pass
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return float("inf")
