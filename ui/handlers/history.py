"""History tab: every song on disk, newest first; play, download, delete, reuse settings."""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import replace
from pathlib import Path

import gradio as gr

from heartmula import GenerateOptions, SongGone, clock, default_title, from_shown_values, plan_continuation

from ..controls import shown_value
from ..errors import info, warning
from .common import exact_for_browser, song_resources
from .generate import GEN_NAMES

HEADERS = ["★", "Title", "Tags", "Length", "Seed", "Created", "Made from", "ID"]
COL = {name: i for i, name in enumerate(HEADERS)}
SAME_SEED, NEW_SEED = "same seed", "new seed"  # what "Reuse settings" does with the song's seed
SEED_CHOICES = [SAME_SEED, NEW_SEED]
FRAME_S = 0.08  # one frame of a song: the finest point to regenerate from
SHOWN = 200  # rows in the table; a search narrows a larger library
FAVOURITE, NOT_FAVOURITE = "★ Favourite (click to remove)", "☆ Add to favourites"


def refresh(studio, selected: str | None = None, query: str = "", favourites: bool = False, *,
            pick_first: bool = True) -> dict:
    """The table (newest first, the newest SHOWN matching the search) and the picked song; a
    picked song that is gone gives way to the newest (`pick_first`) or to none. Sidecars that
    cannot be listed are reported by name."""
    entries, total = studio.history.find(query or "", favourites=bool(favourites), limit=SHOWN)
    rows = [["★" if e.favourite else "", e.title, e.tags, f"{e.duration_s:.1f} s", str(e.seed),
             e.created.replace("T", " ")[:16], lineage(e), e.id] for e in entries]
    ids = [e.id for e in entries]
    value = selected if selected and (selected in ids or _exists(studio, selected)) else (
        ids[0] if ids and pick_first else None)
    searched = bool((query or "").strip()) or favourites
    what = "favourite " if favourites else ""
    if searched:
        words = " ".join((query or "").split())
        words = words if len(words) <= 60 else words[:59] + "…"
        note = f"{total} {what}song(s) match" + (f" “{_md(words)}”" if words else "")
    else:
        note = f"{total} song(s) in `{studio.history.folder}`"
    if total > len(rows):
        note += f" · showing the newest {len(rows)}; search to find the rest"
    if studio.history.skipped:
        note += "  \n⚠️ skipped: " + "; ".join(f"{p.name}: {reason[:120]}" for p, reason in studio.history.skipped[:5])
        if len(studio.history.skipped) > 5:
            note += f"; and {len(studio.history.skipped) - 5} more"
    return {"table": rows, "song": value, "status": note}


def _exists(studio, song_id: str) -> bool:
    try:
        studio.history.get(song_id)
    except ValueError:
        return False
    return True


def gone(studio, song_id: str, query: str = "", favourites: bool = False) -> dict:
    """The picked song was deleted elsewhere (another tab or window, the CLI's folder) after
    this tab listed it: say so, and list again. The pick goes (`song` None), and with it, through
    the song's change event, its player and details; nothing polls for this."""
    warning(f"Song {song_id} was deleted in another tab or window; the list is up to date again")
    out = refresh(studio, None, query, favourites, pick_first=False)
    out["status"] = (f"⚠️ `{str(song_id).replace('`', '')}` was deleted in another tab or window; the list is up "
                     f"to date again.  \n{out['status']}")
    return out


def lists_again_when_gone(fn):
    """A handler acting on the picked song answers `gone(...)` where that song's files are gone
    (its outputs then include the list: table, song, status). Its `query` and `favourites`, where
    it takes them, keep the list as searched."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SongGone as e:
            given = signature.bind(*args, **kwargs)
            given.apply_defaults()
            a = given.arguments
            return gone(a["studio"], e.song_id, a.get("query") or "", bool(a.get("favourites")))

    return wrapper


def lineage(entry) -> str:
    """What the row says of where a song came from, or that it cannot be continued."""
    if entry.parent_id:
        return f"{entry.parent_mode or 'made'} of {entry.parent_id} at {clock(float(entry.parent_at_s or 0))}"
    if not entry.has_codes:
        return "saved without codes: plays, can't be extended"
    return ""


def clicked(row: list | None, column: int | None) -> dict:
    """A click on a table row picks its song (the ID is the row's last cell)."""
    if not row or len(row) != len(HEADERS) or not row[COL["ID"]]:
        return {}
    return {"song": str(row[COL["ID"]]), "continue_status": ""}  # the last extend's line was about another song


@lists_again_when_gone
def save_title(studio, song_id: str | None, title: str, query: str = "", favourites: bool = False) -> dict:
    """Give the picked song a title (blank: its first lyric line again)."""
    if not song_id:
        raise ValueError("pick a song in the list first")
    song = studio.history.set_title(song_id, title or "")
    out = refresh(studio, song.id, query, favourites)
    out.update(_same_song(studio, song.id))
    info(f"Title saved: {out['title']}")
    return out


@lists_again_when_gone
def toggle_favourite(studio, song_id: str | None, query: str = "", favourites: bool = False) -> dict:
    if not song_id:
        raise ValueError("pick a song in the list first")
    now = studio.history.get(song_id).meta.get("favourite") is not True
    studio.history.set_favourite(song_id, now)
    out = refresh(studio, song_id, query, favourites)
    out.update(_same_song(studio, song_id))
    info(("Added to favourites: " if now else "Removed from favourites: ") + out["title"])
    return out


def _continue(studio, song_id: str | None, mode: str, **how) -> dict:
    """Extend a song, or regenerate it from a point: new History entries that name it."""
    if not song_id:
        raise ValueError("pick a song in the list first")
    try:
        song = studio.history.get(song_id)
    except SongGone:
        # the list is shown unsearched, as after a run (extend and regenerate take no search)
        out = gone(studio, song_id)
        out.update(search="", favourites_only=False,
                   continue_status="❌ Not done: the song was deleted in another tab or window.")
        return out
    plan = plan_continuation(song.meta, song.frames(), mode, parent_id=song.id, **how)
    # marked before it waits for the device: deleted meanwhile, the new song would name a parent that is gone
    studio.continuing[song.id] = "extending it" if mode == "extend" else "regenerating from it"
    try:
        with studio.turns.take(f"a song being {'extended' if mode == 'extend' else 'regenerated'}") as turn:
            turn.wait()  # no Stop button to watch: it runs when the jobs before it have ended
            studio.stats.start(mode)
            try:
                result = studio.engine.generate(plan.lyrics, plan.tags, plan.options, kept=[plan.kept],
                                                codec_seeds=plan.codec_seeds, on_progress=studio.stats.progress)
                songs = studio.history.save(replace(result, parent=plan.parent))
            finally:
                studio.stats.finish()
    finally:
        studio.continuing.pop(song.id, None)
    what = f"{'extended' if mode == 'extend' else 'regenerated from ' + clock(plan.parent['at_s'])}"
    # named after the song it was made from (a sung line of its own would be a name nobody gave it)
    entries, _ = studio.history.find(ids=[song.id])
    made_from = entries[0].title if entries else default_title(song.lyrics, song.tags)
    takes = [f" · take {i + 1}" if len(songs) > 1 else "" for i in range(len(songs))]
    songs = [studio.history.set_title(s.id, f"{made_from} · {what}{take}") for s, take in zip(songs, takes)]
    info(f"“{made_from}” {what}: {len(songs)} new song(s)")
    out = refresh(studio, songs[0].id)
    out.update(search="", favourites_only=False)  # so the new songs are in the list
    out["continue_status"] = (f"✅ “{_md(made_from)}” {what}: {', '.join(s.id for s in songs)} "
                              f"({songs[0].duration_s:.1f} s, seed{'s' if len(songs) > 1 else ''} "
                              f"{', '.join(str(s.seed) for s in songs)}) · "
                              f"{song_resources(result.quant, result.peak_memory_bytes, result.device)}")
    return out


def continue_started(studio, mode: str, song_id: str | None) -> dict:
    """Extend… / Regenerate from… pressed: both wait until the job is done (a second press would
    queue against whichever song is picked by then), and the line says which song is being made
    from (the minimal progress bar follows it)."""
    entries, _ = studio.history.find(ids=[song_id]) if song_id else ([], 0)
    name = f"“{_md(entries[0].title)}”" if entries else "the picked song"  # a gone song: the job says so
    doing = "Extending" if mode == "extend" else "Regenerating"
    return {"extend_btn": gr.update(interactive=False), "regen_btn": gr.update(interactive=False),
            "continue_status": f"⏳ {doing} {name}…"}


def continue_ended(status: str) -> dict:
    """The job ended: the buttons come back; a line still saying "⏳" means it failed (the
    message says why)."""
    out = {"extend_btn": gr.update(interactive=True), "regen_btn": gr.update(interactive=True)}
    if (status or "").startswith("⏳"):
        out["continue_status"] = "❌ Not done (see the message)."
    return out


def extend(studio, song_id: str | None, seconds, lyrics: str = "") -> dict:
    """The picked song, `seconds` longer: its frames kept, the same seed drawing on."""
    seconds = parse_seconds(seconds)
    return _continue(studio, song_id, "extend", seconds=seconds, lyrics=(lyrics or "").strip() or None,
                     ignore_eos=True)


def regenerate(studio, song_id: str | None, at: str, takes=1, lyrics: str = "") -> dict:
    """The picked song kept up to `at` (m:ss), the rest drawn again as `takes` new takes."""
    takes = from_shown_values(GenerateOptions, {"takes": takes}).takes  # the declared range, in its words
    return _continue(studio, song_id, "regenerate", at=str(at or "").strip(), takes=takes,
                     lyrics=(lyrics or "").strip() or None)


FAMILY_HEADERS = ["Title", "Made from", "Length (s)", "Seed", "Created", "ID"]
FAMILY_PLAYERS = 4


@lists_again_when_gone
def variants(studio, song_id: str | None, query: str = "", favourites: bool = False) -> dict:
    """The Compare tab's song section: the picked song, the song it was made from and every song
    made from either (extensions, regenerations), in a table and side by side in players."""
    if not song_id:
        raise ValueError("pick a song in the list first")
    song = studio.history.get(song_id)
    family = studio.history.family(song.id)
    entries = {e.id: e for e in studio.history.find(ids=family)[0]}
    ordered = [song.id] + [i for i in family if i != song.id and i in entries]  # the picked one first
    rows = [[entries[i].title, lineage(entries[i]) or "the original", round(entries[i].duration_s, 1),
             str(entries[i].seed), entries[i].created.replace("T", " ")[:19], i] for i in ordered if i in entries]
    players = []
    for k in range(FAMILY_PLAYERS):
        if k < len(ordered) and ordered[k] in entries:
            e = entries[ordered[k]]
            label = ("picked: " if k == 0 else "") + f"{e.title[:40]} · {lineage(e) or 'the original'}"
            players.append(gr.update(value=str(studio.history.get(e.id).audio_path), visible=True, label=label))
        else:
            players.append(gr.update(value=None, visible=False))
    if len(ordered) == 1:
        note = (f"**{_md(entries[song.id].title if song.id in entries else song.id)}** has no variants yet: "
                "extend it or regenerate it from a point in History, then compare again.")
    else:
        note = f"**{len(ordered)} songs** in this song's family (the picked one first)"
        if len(ordered) > FAMILY_PLAYERS:
            note += f"; the first {FAMILY_PLAYERS} have players, the table lists all"
    return {"family_note": note, "family_table": rows, "family_audios": players, "tabs": gr.Tabs(selected="compare")}


def parse_seconds(value) -> float:
    """The seconds to add, as typed or sent through the API; the song decides the upper bound."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("enter the seconds to add (more than 0)")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"seconds to add must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"seconds to add must be a number of seconds, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"seconds to add must be more than 0, got {value!r}")
    return seconds


def _same_song(studio, song_id: str) -> dict:
    """select's outputs for a song that stays picked: what was typed for its next step stays."""
    out = select(studio, song_id)
    del out["regen_at"]
    return out


@lists_again_when_gone
def select(studio, song_id: str | None, query: str = "", favourites: bool = False) -> dict:
    hide = {"confirm_row": gr.update(visible=False)}  # a delete asked about another song is off
    if not song_id:
        return {"player": None, "downloads": None, "details": None, "now": "*Click a song in the list to play it.*",
                "title": "", "favourite": gr.update(value=NOT_FAVOURITE, interactive=False), **hide}
    song = studio.history.get(song_id)
    entries, _ = studio.history.find(ids=[song.id])
    entry = entries[0] if entries else None
    title = entry.title if entry else default_title(song.lyrics, song.tags)
    made = f" · {lineage(entry)}" if entry and lineage(entry) else ""
    half = max(FRAME_S, round(song.duration_s / 2 / FRAME_S) * FRAME_S)  # a time inside this song
    return {"player": str(song.audio_path), "downloads": [str(p) for p in song.downloads],
            "details": exact_for_browser(song.meta), "regen_at": clock(half),
            "now": f"**{_md(title)}**  \n{_md(song.tags)} · {song.duration_s:.1f} s · seed {song.seed}{_md(made)}  \n"
                   f"{_resources(song.meta)}  \n<small>{song.id}</small>",
            "title": title, "favourite": gr.update(value=FAVOURITE if song.meta.get("favourite") is True
                                                   else NOT_FAVOURITE, interactive=True), **hide}


def _resources(meta: dict) -> str:
    """The weights and peak memory a song was made with, from its sidecar (songs saved before
    the weights were recorded say so)."""
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    peak = meta.get("peak_memory_bytes")
    device = meta.get("device")
    # the device is the sidecar's text (escaped); the rest are the page's own words and numbers
    return song_resources(model.get("quant"), peak if isinstance(peak, int) and not isinstance(peak, bool) else None,
                          _md(device) if isinstance(device, str) else None)


def _md(text: str) -> str:
    """User text shown in Markdown as written (no links, emphasis or HTML from a title)."""
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>~" else c for c in str(text))


@lists_again_when_gone
def ask_delete(studio, song_id: str | None, query: str = "", favourites: bool = False) -> dict:
    """First step of a delete: say which song goes, and show the confirm / keep buttons."""
    if not song_id:
        raise ValueError("pick a song to delete")
    _not_continuing(studio, song_id)
    song = studio.history.get(song_id)
    return {"confirm_row": gr.update(visible=True),
            "confirm_text": f"Delete **{song.label()}**? Its audio and metadata files are removed for good."}


def cancel_delete() -> dict:
    return {"confirm_row": gr.update(visible=False)}


@lists_again_when_gone
def delete(studio, song_id: str | None, query: str = "", favourites: bool = False) -> dict:
    """Second step (the confirm button): delete the song. Nothing is selected afterwards, so
    another click cannot delete the next song by accident."""
    if not song_id:
        raise ValueError("pick a song to delete")
    _not_continuing(studio, song_id)
    label = studio.history.get(song_id).label()
    removed = studio.history.delete(song_id)
    forget_served_copies({p.name for p in removed})
    info(f"Song deleted: {label}")
    out = refresh(studio, None, query, favourites, pick_first=False)
    out.update(select(studio, None))
    return out


def _not_continuing(studio, song_id: str) -> None:
    if song_id in studio.continuing:
        raise ValueError(f"this song is in use (a job is {studio.continuing[song_id]} now); delete it once that "
                         "is done")


def forget_served_copies(names: set[str]) -> None:
    """Gradio serves a song's files from copies in its upload folder; a deleted song's copies
    go too, or its links keep playing it."""
    from gradio.utils import get_upload_folder

    for path in Path(get_upload_folder()).rglob("*"):
        if path.name in names and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)


@lists_again_when_gone
def reuse(studio, song_id: str | None, seed_choice: str = SAME_SEED, query: str = "",
          favourites: bool = False) -> dict:
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
    info(f"Settings of {song.label()} are in Generate, with "
            + (f"its seed {song.seed}" if seed_choice == SAME_SEED else "a new seed"))
    return {"lyrics": song.lyrics, "tags": song.tags, "options": values, "tabs": gr.Tabs(selected="generate")}
