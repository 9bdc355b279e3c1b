"""Generate tab: lyrics + tags + options -> songs in History, with live progress and Stop."""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import replace
from pathlib import Path

import gradio as gr

from heartmula import (DEFAULT_PRESET, FRAME_MS, AudioChunk, GenerateOptions, GenerationCancelled, TranscribeOptions,
                       check_lyrics, from_shown_values, load_presets, options_of, soft_limit)

from ..controls import form_values, shown_value
from ..errors import warning
from .common import (JobLeftRunning, ProgressLine, exact_for_browser, fmt_s, preset_weights, reports_end, run_job,
                     song_resources, takes_turn)
from .live import LivePlayback, can_stream

log = logging.getLogger("heartmula.studio")
GEN_NAMES = list(options_of(GenerateOptions))  # the order of the Generate tab's option controls
TR_NAMES = list(options_of(TranscribeOptions))  # and of the Transcribe tab's
MAX_TAKES = options_of(GenerateOptions)["takes"].hi

EXAMPLE_LYRICS = """[verse]
Morning light on the window pane
Coffee steam and the sound of rain
I hum a tune that I used to know
Out on the street the city's moving slow

[chorus]
Sing it loud, sing it clear
Every word I need you near
Sing it loud, let it ring
This is the song the morning brings
"""
EXAMPLE_TAGS = "pop, piano, happy, female vocals"

TAG_CHOICES = {
    "Genre": ["pop", "rock", "hip hop", "electronic", "jazz", "folk", "r&b", "country", "classical", "ambient",
              "indie", "metal", "reggae", "blues"],
    "Mood": ["happy", "sad", "energetic", "romantic", "calm", "melancholic", "uplifting", "dark", "dreamy", "epic"],
    "Instrument": ["piano", "acoustic guitar", "electric guitar", "synthesizer", "drums", "bass", "strings",
                   "violin", "saxophone", "organ"],
    "Voice": ["female vocals", "male vocals", "duet", "choir", "rap", "whisper vocals"],
}


def random_seed() -> str:
    return str(secrets.randbelow(2**31))


def preset_names(selected: str | None = None) -> dict:
    """Dropdown update listing every preset that loads (built-ins first)."""
    presets, _ = load_presets()
    names = list(presets)
    value = selected if selected in names else (DEFAULT_PRESET if DEFAULT_PRESET in names else names[0])
    return gr.update(choices=names, value=value)


def apply_preset(name: str) -> dict:
    """The preset's values for the option controls (the seed stays as it is: a preset tunes,
    a seed picks a song)."""
    presets, _ = load_presets()
    if name not in presets:
        raise ValueError(f"no preset named {name!r}; pick one from the list")
    p = presets[name]
    return {
        "options": [gr.update() if n == "seed" else shown_value(GenerateOptions, n, getattr(p.generate, n))
                    for n in GEN_NAMES],
        "preset_info": f"*{p.description}*" if p.description else "",
    }


def pick_preset(studio, name: str) -> dict:
    """The Generate tab's preset picker: `apply_preset`, and a preset's weights (`quant`) set
    the Settings choice as picking it there does; the note under the preset says when a Load on
    the Settings tab is needed to use them."""
    out = {**apply_preset(name), **preset_weights(studio, name)}
    if out.get("quant_note"):
        note = out["quant_note"].replace("press **Load**", "press **Load** on the Settings tab")
        out["preset_info"] = "  \n".join(t for t in (out["preset_info"], note) if t)
    return out


def follow_settings_preset(studio, name: str) -> dict:
    """A preset picked on Settings: Generate's picker names it too, with its description (its
    values reach Generate's controls through Settings), so the two tabs never disagree."""
    info = pick_preset(studio, name)["preset_info"]
    return {"preset": gr.update(value=name), "preset_info": info}


def add_tag(tags: str, picked: str | None) -> dict:
    """Append a quick-pick tag to the tags text (once), then clear the picker."""
    tags = tags or ""
    if picked:
        have = [t.strip().lower() for t in tags.split(",") if t.strip()]
        if picked.lower() not in have:
            tags = f"{tags.rstrip().rstrip(',')}, {picked}" if tags.strip() else picked
    return {"tags": tags, "picker": None}


def build_options(preset: str | None, *values) -> GenerateOptions:
    """The preset's options with the option controls' values (GEN_NAMES order) applied;
    ValueError names the bad one (GenerateOptions checks, nothing here re-checks)."""
    presets, _ = load_presets()
    base = presets[preset].generate if preset in presets else GenerateOptions()
    return from_shown_values(GenerateOptions, form_values(GenerateOptions, GEN_NAMES, values), base=base)


def transcribe_options(*values) -> TranscribeOptions:
    """TranscribeOptions from the Transcribe tab's option controls (TR_NAMES order); a blank
    language means the model's own."""
    return from_shown_values(TranscribeOptions, form_values(TranscribeOptions, TR_NAMES, values))


def _results_text(result, songs) -> str:
    lines = [
        f"✅ **{len(songs)} take(s)** · {fmt_s(max(result.durations_s))} of audio · seed {result.seeds[0]}",
        f"frames: {result.frames_per_s:.1f} frames/s ({1000 / result.frames_per_s:.0f} ms/frame) in "
        f"{fmt_s(result.frames_s)} · decode {fmt_s(result.decode_s)} · total {fmt_s(result.total_s)}"
        if result.frames_per_s else f"total {fmt_s(result.total_s)}",
        f"{song_resources(result.quant, result.peak_memory_bytes, result.device)} · saved to History",
    ]
    return "  \n".join(lines)


SO_FAR = "-so-far.wav"  # how a take's audio so far is named (the finished takes are History's)
STOP_GRACE_S = 0.25  # after Stop, how long the page waits for the engine before it reports stopped (a
# frame takes milliseconds; a codec window being decoded, seconds on a CPU: that one is left to end alone)


def check_generate(studio, lyrics, tags, *values) -> None:
    """What `generate` would refuse before it runs (options, texts, fit): ValueError."""
    studio.engine.check_request(lyrics, tags, build_options(None, *values))


@reports_end("status", stopped="⏹ Stopped: not saved to History.")  # what was made may stay playable (_stopped)
@takes_turn("another song", "status", check=check_generate)
def generate(studio, session, lyrics, tags, *values):
    """Generator: progress lines while the engine works, take 1 on the live player as soon as it
    can play through (see live.py), then one player per take. `values`: the option controls, in
    GEN_NAMES order. A run takes every option from them (a preset only fills them in when
    picked), so a preset deleted since, or one the API names, cannot matter."""
    options = build_options(None, *values)
    engine = studio.engine
    line = ProgressLine()
    live = LivePlayback(options.takes, round(options.max_audio_length_ms / FRAME_MS), streaming=can_stream())
    session.play_now.clear()
    session.live_files = {}
    session.last_song_ids = []  # the result buttons act on this run's takes, once there are some
    left = []  # set once the page went away and the song is finished in the background
    studio.stats.start("generate")
    try:
        # the last song leaves the page (it is in History): the live player, the takes, their
        # downloads and the Take picker, so a stopped run never shows the previous one as its own
        yield {"live": gr.update(value=None), "live_note": live.note(), "play_now": gr.update(visible=False),
               "hear": gr.update(choices=[f"Take {i + 1}" for i in range(options.takes)], value=None,
                                 visible=options.takes > 1),
               "audios": [gr.update(value=None, visible=False)] * MAX_TAKES, "downloads": None, "metadata": None,
               "check_take": gr.update(choices=[], value=None), "check_result": ""}
        if engine.busy:  # a stopped job ends the codec window it is in before the engine takes another
            line.waiting = "⏳ Waiting for the last job to finish (a stopped song ends the codec window it is in)…"
            yield {"status": line(None)}
        def finish_without_page(result_of_job) -> None:
            # The page was closed or reloaded mid-song: nothing the musician made is lost. The
            # song goes on, keeps the device (a new job waits its turn) and lands in History.
            left.append(True)

            def finish() -> None:
                try:
                    result = result_of_job()
                    studio.stats.generation_done(result)
                    studio.stats.phase("saving")
                    songs = _save(studio, result)
                    log.info("the page of song %s went away mid-song; it was finished and saved to History",
                             songs[0].id)
                except GenerationCancelled:
                    log.info("the page went away after a Stop: nothing saved")
                except Exception:
                    log.exception("the page went away mid-song, and finishing the song failed")
                finally:
                    studio.stats.finish()

            session.turn.hand_off(finish)

        job = run_job(lambda **kw: engine.generate_stream(lyrics, tags, options, **kw), session.cancel,
                      on_progress=studio.stats.progress, stream=True, stop_grace_s=STOP_GRACE_S,
                      on_leave=finish_without_page)
        try:
            while True:
                try:
                    item = next(job)
                except StopIteration as done:
                    result = done.value
                    break
                if isinstance(item, AudioChunk):
                    live.add(item)
                    session.live_files[item.take] = str(live.write_so_far(item.take, studio.temp_path(
                        f"take{item.take + 1}{SO_FAR}")))
                    status = line(None)
                else:
                    live.progress(item)
                    status = line(item)
                yield from _play(live, session)
                yield {"status": status, "live_note": live.note(), "play_now": gr.update(visible=_waiting(live))}
        except (GenerationCancelled, JobLeftRunning) as e:
            yield _stopped(live, session)
            if isinstance(e, JobLeftRunning):
                raise GenerationCancelled(str(e)) from None
            raise
        except Exception:  # refused or failed: the note must not promise audio beside the error
            yield {"live_note": "Nothing was made.", "play_now": gr.update(visible=False),
                   "hear": gr.update(visible=False)}
            raise
        live.frames_ended = True  # whatever is left plays now: it is all there
        studio.stats.generation_done(result)
        studio.stats.phase("saving")
        try:
            yield from _play(live, session)
            yield {"status": line.saving()}
        except GeneratorExit:  # the page went away with the song made: save it all the same
            finish_without_page(lambda: result)
            raise
        songs = _save(studio, result)
    finally:
        if not left:
            studio.stats.finish()
    session.last_song_ids = [s.id for s in songs]
    session.last_lyrics = lyrics
    session.live_files = {i: str(s.audio_path) for i, s in enumerate(songs)}
    audios = [gr.update(value=str(s.audio_path), visible=True, label=f"Take {i + 1} · seed {s.seed}")
              for i, s in enumerate(songs)]
    audios += [gr.update(value=None, visible=False)] * (MAX_TAKES - len(songs))
    late = (" · ⏹ Stop came after the song was made, so it was kept (delete it in History if unwanted)"
            if session.cancel.is_set() else "")
    yield {
        "status": _results_text(result, songs) + late,
        "audios": audios,
        "downloads": [str(p) for s in songs for p in s.downloads],
        "metadata": exact_for_browser(songs[0].meta if len(songs) == 1 else [s.meta for s in songs]),
        "check_take": gr.update(choices=[f"Take {i + 1}" for i in range(len(songs))], value="Take 1"),
        "check_result": "",
        "live_note": (f"🔊 Take 1 in full ({fmt_s(live.playable_s(0))}) on the live player; every take's file is below."
                      if live.playing else "Every take's file is below."),
        "play_now": gr.update(visible=False),
        "hear": gr.update(value=None, visible=False),  # every take has its player and file now
    }


def _save(studio, result) -> list:
    """Save a finished generation's takes to History (what was heard is what is saved: the
    chunks, limited one by one as they were played)."""
    return studio.history.save(replace(result, audio=[soft_limit(a) for a in result.audio]))


FINISHING = ("⏳ A song whose page was closed or reloaded is being finished; it will be saved to History. "
             "A Generate here waits for it.")


def page_status(studio) -> str:
    """The Generate tab's status line for a page just opened: whether the device is in use."""
    if studio.turns.finishing:
        return FINISHING
    if studio.turns.busy:
        return "⏳ Another page's job is using the device; a Generate here waits for it."
    return "Ready."


def page_status_again(studio, shown: str) -> dict:
    """The page's timer, while its line says a left song is being finished (`FINISHING`): the line
    once that song is saved. A line the page's own job has written since is left alone, and the
    timer stops either way."""
    if shown != FINISHING:
        return {"page_timer": gr.update(active=False)}
    if studio.turns.finishing:
        return {}
    return {"status": "✅ The song of the page that was closed or reloaded was saved to History.",
            "page_timer": gr.update(active=False)}


def _last_take(session, take_label: str, none_yet: str, pick: str) -> tuple[int, str]:
    """(index, History id) of the last run's take named by the picker ("Take 2"); ValueError
    `none_yet` before any run, `pick` with the range for a label that names no take."""
    if not session.last_song_ids:
        raise ValueError(none_yet)
    try:
        index = int(str(take_label).split()[-1]) - 1
        return index, session.last_song_ids[index]
    except (ValueError, IndexError):
        raise ValueError(f"{pick} (1 to {len(session.last_song_ids)})") from None


def open_in_history(studio, session, take_label: str) -> dict:
    """Extend… / Regenerate from… on a result: the take, picked in History, where both are done."""
    index, song_id = _last_take(session, take_label, "generate a song first", "pick a take")
    try:
        studio.history.get(song_id)
    except ValueError:
        raise ValueError(f"take {index + 1} of the last run is no longer in History (it was deleted)") from None
    return {"song": song_id, "tabs": gr.Tabs(selected="history")}


def _waiting(live: LivePlayback) -> bool:
    """Take 1 has audio but waits for the rest (the "Play what is ready" button shows)."""
    return bool(live.samples[0]) and not live.playing


def _play(live: LivePlayback, session):
    """Send take 1's new audio to the live player, once it may play."""
    live.start_if_ready(session.play_now.is_set())
    for piece in live.pieces():
        yield {"live": piece}


def _stopped(live: LivePlayback, session) -> dict:
    """After a Stop: how soon the job ended, and every take's audio so far stays playable."""
    after = f"{time.monotonic() - session.stop_at:.2f}" if session.stop_at is not None else "?"
    kept = [i for i in range(live.takes) if live.samples[i]]
    empty = [i for i in range(live.takes) if i not in kept]
    none_yet = (f" {', '.join(f'Take {i + 1}' for i in empty)} had no audio yet: a take's audio comes a codec "
                f"window (about 30 s of song) at a time." if kept and empty else "")
    out = {"live_note": f"⏹ Generation stopped {after} s after Stop. "
                        + ("What was made stays playable below (not saved to History)." if kept else
                           "No audio was made yet.") + none_yet,
           "play_now": gr.update(visible=False)}
    stamp = time.strftime("%Y%m%d-%H%M%S")  # saved songs are named by time too; two stops never share a name
    for i in kept:  # named for what it is, as the player's and the Downloads' file name
        stopped = Path(session.live_files[i]).with_name(f"stopped-{stamp}-take{i + 1}.wav")
        os.replace(session.live_files[i], stopped)
        session.live_files[i] = str(stopped)
    if kept:
        out["audios"] = [gr.update(value=session.live_files[i], visible=True,
                                   label=f"Take {i + 1} · first {fmt_s(live.playable_s(i))} (stopped; not saved)")
                         if i in kept else gr.update(value=None, visible=False) for i in range(MAX_TAKES)]
        out["downloads"] = [session.live_files[i] for i in kept]  # not in History: this is the one way to keep it
    return out


def play_now(session) -> dict:
    """ "Play what is ready" (outside the queue): take 1 starts with its next progress step."""
    session.play_now.set()
    return {"play_now": gr.update(visible=False)}


def hear_take(session, take_label: str | None) -> dict:
    """Put a take's audio so far (its file, once done) on its player, to hear it now."""
    try:
        index = int(str(take_label).split()[-1]) - 1
    except ValueError:
        raise ValueError("pick a take to hear") from None
    path = session.live_files.get(index)
    if path is None:  # a toast, and the picker let go: it must not name a take that is not playing
        warning(f"take {index + 1} has no audio yet: it comes a codec window (about 30 s of song) at a time")
        return {"hear": gr.update(value=None)}
    audios = [gr.update() for _ in range(MAX_TAKES)]
    if path.endswith(SO_FAR):
        import soundfile as sf

        label = f"Take {index + 1} · its first {fmt_s(sf.info(path).duration)} (so far)"
        audios[index] = gr.update(value=path, visible=True, label=label)
    else:  # the finished file: its player already says which take and seed it is
        audios[index] = gr.update(value=path, visible=True)
    return {"audios": audios}


@takes_turn("a lyric check", "check_result", stoppable=False)  # Stop is the song's: it must not end a check
def check_take(studio, session, take_label: str, lyrics: str, *tr_values):
    """Transcribe one take of the last generation and compare it with the lyrics (word error
    rate), with the Transcribe tab's options (`tr_values`, in TR_NAMES order)."""
    options = transcribe_options(*tr_values) if tr_values else TranscribeOptions()
    index, song_id = _last_take(session, take_label, "generate a song first, then check its lyrics",
                                "pick a take to check")
    song = studio.history.get(song_id)
    yield {"check_result": f"⏳ Transcribing take {index + 1}…"}
    transcriber = studio.transcriber()
    studio.stats.start("transcribe")
    try:
        tr = transcriber.transcribe(str(song.audio_path), options)
        studio.stats.transcription_done(tr)
    finally:
        studio.stats.finish()
    check = check_lyrics(lyrics or song.lyrics, tr.text)
    demo = " (demo transcriber: English only, rough)" if tr.is_demo else ""
    yield {
        "check_result": (
            f"**Word error rate {check.word_error_rate:.0%}** — {check.hits} of {check.n_intended} lyric words heard, "
            f"{check.substitutions} substituted, {check.deletions} missing, {check.insertions} extra{demo}  \n"
            f"Heard: “{tr.text or '(nothing)'}”  \n"
            f"Diff (= same, - missing, + extra): `{check.diff() or '(empty)'}`"
        ),
    }
