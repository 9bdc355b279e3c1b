"""History tab: every song on disk, newest first; play, download, delete, reuse settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gradio as gr

from heartmula import GenerateOptions, clock, plan_continuation

from ..controls import shown_value
from .common import exact_for_browser
from .generate import GEN_NAMES

HEADERS = ["Created", "Tags", "Length (s)", "Seed", "Take", "ID", "Made from"]
SAME_SEED, NEW_SEED = "same seed", "new seed"  # what "Reuse settings" does with the song's seed
SEED_CHOICES = [SAME_SEED, NEW_SEED]


def refresh(studio, selected: str | None = None, *, pick_first: bool = True) -> dict:
    """The table and the song picker, newest first; skipped sidecars are reported. A selected
    song that is gone gives way to the newest (`pick_first`) or to none."""
    songs, warnings = studio.history.scan()
    rows = [[s.created.replace("T", " ")[:19], s.tags, round(s.duration_s, 1), str(s.seed), s.take + 1, s.id,
             lineage(s)] for s in songs]
    ids = [s.id for s in songs]
    value = selected if selected in ids else (ids[0] if ids and pick_first else None)
    note = f"{len(songs)} song(s) in `{studio.history.folder}`"
    if warnings:
        note += "  \n⚠️ skipped: " + "; ".join(warnings)
    return {
        "table": rows,
        "song": gr.update(choices=[(s.label(), s.id) for s in songs], value=value),
        "status": note,
    }


def lineage(song) -> str:
    """What the row says of where a song came from, or that it cannot be continued."""
    parent = song.meta.get("parent")
    if isinstance(parent, dict) and parent.get("id"):
        return f"{parent.get('mode', 'made')} of {parent['id']} at {clock(float(parent.get('at_s') or 0))}"
    if song.codes_path is None:
        return "saved without codes: plays, can't be extended"
    return ""


def _continue(studio, song_id: str | None, mode: str, **how) -> dict:
    """Extend a song, or regenerate it from a point: new History entries that name it."""
    if not song_id:
        raise ValueError("pick a song in the list first")
    song = studio.history.get(song_id)
    plan = plan_continuation(song.meta, song.frames(), mode, parent_id=song.id, **how)
    studio.stats.start(mode)
    try:
        result = studio.engine.generate(plan.lyrics, plan.tags, plan.options, kept=[plan.kept],
                                        codec_seeds=plan.codec_seeds, on_progress=studio.stats.progress)
        songs = studio.history.save(replace(result, parent=plan.parent))
    finally:
        studio.stats.finish()
    what = f"{'extended' if mode == 'extend' else 'regenerated from ' + clock(plan.parent['at_s'])}"
    gr.Info(f"{len(songs)} new song(s): {song.id} {what}")
    out = refresh(studio, songs[0].id)
    out["continue_status"] = (f"✅ {what}: {', '.join(s.id for s in songs)} "
                              f"({songs[0].duration_s:.1f} s, seed {songs[0].seed})")
    return out


def extend(studio, song_id: str | None, seconds, lyrics: str = "") -> dict:
    """The picked song, `seconds` longer: its frames kept, the same seed drawing on."""
    seconds = parse_seconds(seconds)
    return _continue(studio, song_id, "extend", seconds=seconds, lyrics=(lyrics or "").strip() or None,
                     ignore_eos=True)


def regenerate(studio, song_id: str | None, at: str, takes=1, lyrics: str = "") -> dict:
    """The picked song kept up to `at` (m:ss), the rest drawn again as `takes` new takes."""
    if isinstance(takes, bool) or not isinstance(takes, (int, float)) or takes != int(takes) or not 1 <= takes <= 8:
        raise ValueError(f"takes must be a whole number from 1 to 8, got {takes!r}")
    return _continue(studio, song_id, "regenerate", at=str(at or "").strip(), takes=int(takes),
                     lyrics=(lyrics or "").strip() or None)


def parse_seconds(value) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"seconds to add must be a number, got {value!r}") from None
    if not 0 < seconds < 10_000:
        raise ValueError(f"seconds to add must be more than 0, got {value!r}")
    return seconds


def select(studio, song_id: str | None) -> dict:
    hide = {"confirm_row": gr.update(visible=False)}  # a delete asked about another song is off
    if not song_id:
        return {"player": None, "downloads": None, "details": None, **hide}
    song = studio.history.get(song_id)
    return {"player": str(song.audio_path), "downloads": [str(p) for p in song.downloads], "details": exact_for_browser(song.meta),
            **hide}


def ask_delete(studio, song_id: str | None) -> dict:
    """First step of a delete: say which song goes, and show the confirm / keep buttons."""
    if not song_id:
        raise ValueError("pick a song to delete")
    song = studio.history.get(song_id)
    return {"confirm_row": gr.update(visible=True),
            "confirm_text": f"Delete **{song.label()}**? Its audio and metadata files are removed for good."}


def cancel_delete() -> dict:
    return {"confirm_row": gr.update(visible=False)}


def delete(studio, song_id: str | None) -> dict:
    """Second step (the confirm button): delete the song. Nothing is selected afterwards, so
    another click cannot delete the next song by accident."""
    if not song_id:
        raise ValueError("pick a song to delete")
    label = studio.history.get(song_id).label()
    removed = studio.history.delete(song_id)
    forget_served_copies({p.name for p in removed})
    gr.Info(f"Song deleted: {label}")
    out = refresh(studio, pick_first=False)
    out.update(select(studio, None))
    return out


def forget_served_copies(names: set[str]) -> None:
    """Gradio serves a song's files from copies in its upload folder; a deleted song's copies
    go too, or its links keep playing it."""
    from gradio.utils import get_upload_folder

    for path in Path(get_upload_folder()).rglob("*"):
        if path.name in names and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)


def reuse(studio, song_id: str | None, seed_choice: str = SAME_SEED) -> dict:
    """The song's lyrics, tags, every option its sidecar records and, with "same seed", its
    seed, for the Generate tab's controls (an option the sidecar lacks or holds wrongly keeps
    its control's value; "new seed" blanks the seed box: a fresh seed on the next run)."""
    if not song_id:
        raise ValueError("pick a song whose settings to reuse")
    if seed_choice not in SEED_CHOICES:
        raise ValueError(f"seed: pick {' or '.join(map(repr, SEED_CHOICES))}")
    song = studio.history.get(song_id)
    recorded = {**song.options, "seed": song.seed}
    values = []
    for name in GEN_NAMES:
        try:  # the sidecar's stored value, checked as any option is
            value = getattr(replace(GenerateOptions(), **{name: recorded.get(name)}), name)
        except ValueError:
            value = None
        values.append(gr.update() if value is None else shown_value(GenerateOptions, name, value))
    if seed_choice == NEW_SEED:
        values[GEN_NAMES.index("seed")] = shown_value(GenerateOptions, "seed", None)
    gr.Info(f"Settings of {song.label()} are in Generate, with "
            + (f"its seed {song.seed}" if seed_choice == SAME_SEED else "a new seed"))
    return {"lyrics": song.lyrics, "tags": song.tags, "options": values, "tabs": gr.Tabs(selected="generate")}
