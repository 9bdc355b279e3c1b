"""History tab: every song on disk, newest first; play, download, delete, reuse settings."""

from __future__ import annotations

import gradio as gr

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
    """The song's lyrics, tags and options, for the Generate tab's controls."""
    if not song_id:
        raise ValueError("pick a song whose settings to reuse")
    song = studio.history.get(song_id)
    o = song.options
    out = {"lyrics": song.lyrics, "tags": song.tags, "seed": song.seed if song.seed is not None else -1,
           "tabs": gr.Tabs(selected="generate")}
    for name, key, scale in (("duration_s", "max_audio_length_ms", 1e-3), ("cfg_scale", "cfg_scale", 1),
                             ("temperature", "temperature", 1), ("topk", "topk", 1), ("takes", "takes", 1)):
        if isinstance(o.get(key), (int, float)):
            out[name] = o[key] * scale if scale != 1 else o[key]
    return out
