"""History tab: every song on disk, newest first; play, download, delete, reuse settings."""

from __future__ import annotations

from dataclasses import replace

import gradio as gr

from heartmula import GenerateOptions

from ..controls import shown_value
from .generate import GEN_NAMES

HEADERS = ["Created", "Tags", "Length (s)", "Seed", "Take", "ID"]


def refresh(studio, selected: str | None = None) -> dict:
    """The table and the song picker, newest first; skipped sidecars are reported."""
    songs, warnings = studio.history.scan()
    rows = [[s.created.replace("T", " ")[:19], s.tags, round(s.duration_s, 1), s.seed, s.take + 1, s.id]
            for s in songs]
    ids = [s.id for s in songs]
    value = selected if selected in ids else (ids[0] if ids else None)
    note = f"{len(songs)} song(s) in `{studio.history.folder}`"
    if warnings:
        note += "  \n⚠️ skipped: " + "; ".join(warnings)
    return {
        "table": rows,
        "song": gr.update(choices=[(s.label(), s.id) for s in songs], value=value),
        "status": note,
    }


def select(studio, song_id: str | None) -> dict:
    if not song_id:
        return {"player": None, "downloads": None, "details": None}
    song = studio.history.get(song_id)
    return {"player": str(song.audio_path), "downloads": [str(p) for p in song.downloads], "details": song.meta}


def delete(studio, song_id: str | None) -> dict:
    if not song_id:
        raise ValueError("pick a song to delete")
    studio.history.delete(song_id)
    gr.Info("Song deleted")
    out = refresh(studio)
    out.update(select(studio, None))
    return out


def reuse(studio, song_id: str | None) -> dict:
    """The song's lyrics, tags, seed and every option its sidecar records, for the Generate
    tab's controls (an option the sidecar lacks or holds wrongly keeps its control's value)."""
    if not song_id:
        raise ValueError("pick a song whose settings to reuse")
    song = studio.history.get(song_id)
    recorded = {**song.options, "seed": song.seed}
    values = []
    for name in GEN_NAMES:
        try:  # the sidecar's stored value, checked as any option is
            value = getattr(replace(GenerateOptions(), **{name: recorded.get(name)}), name)
        except ValueError:
            value = None
        values.append(gr.update() if value is None else shown_value(GenerateOptions, name, value))
    return {"lyrics": song.lyrics, "tags": song.tags, "options": values, "tabs": gr.Tabs(selected="generate")}
