"""Transcribe tab: an uploaded or recorded clip -> text, timed segments, TXT/LRC/SRT files."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from heartmula import RTF_LABEL, AudioFileError, TranscribeOptions, format_transcript, load_presets, options_of

from ..controls import shown_value
from .common import fmt_s, follow, reports_end, run_job, takes_turn
from .generate import TR_NAMES, transcribe_options

HEADERS = ["Start (s)", "End (s)", "Text"]


def check_transcribe(studio, audio_path, *values) -> None:
    """What `transcribe` would refuse before it runs: no clip, a bad option (ValueError)."""
    if not audio_path:
        raise ValueError("upload or record a clip first")
    transcribe_options(*values)


@reports_end("speed")
@takes_turn("a transcription", "speed", check=check_transcribe)
def transcribe(studio, session, audio_path, *values):
    """Generator: a status line, then the transcript, its segments and files. `values`: the
    option controls, in TR_NAMES order (`check_transcribe` has passed them)."""
    options = transcribe_options(*values)
    name = Path(str(audio_path)).name
    transcriber = studio.transcriber()
    started = time.monotonic()
    studio.stats.start("transcribe")
    try:
        job = run_job(lambda on_progress, should_stop: transcriber.transcribe(
            str(audio_path), options, should_stop=should_stop), session.cancel)
        try:
            result = yield from follow(job, lambda _: {
                "speed": f"⏳ Transcribing with {transcriber.model_name}… {fmt_s(time.monotonic() - started)}"})
        except AudioFileError as e:  # the upload's server-side path means nothing to the musician
            raise AudioFileError(str(e).replace(str(audio_path), name)) from e
        studio.stats.transcription_done(result)
    finally:
        studio.stats.finish()
    stem = Path(str(audio_path)).stem[:40] or "transcript"
    files = []
    heard = bool(result.text.strip())
    for fmt in ("txt", "lrc", "srt") if heard else ():  # empty files would only be downloaded to be thrown away
        path = studio.temp_path(f"{stem}.{fmt}")
        path.write_text(format_transcript(result, fmt), encoding="utf-8")
        files.append(str(path))
    demo = " (English only)" if result.is_demo and "English" not in result.model_name else ""
    speed = (f"⏱ {fmt_s(result.elapsed_s)} for {fmt_s(result.duration_s)} of audio · "
             f"**{RTF_LABEL}: {result.real_time_factor:.3f}** · {result.model_name}{demo}")
    yield {
        "text": result.text,
        "segments": [[round(s.start_s, 2), round(s.end_s, 2), s.text] for s in result.segments],
        "downloads": files or None,
        "speed": speed if heard else (f"🔇 No words found in {fmt_s(result.duration_s)} of audio (silence, or "
                                      f"sound without speech or singing) · {speed}"),
    }


def preset_settings(name: str | None) -> dict:
    """The transcription options a preset sets, for the tab's controls (the language is the clip's)."""
    presets, _ = load_presets()
    if name not in presets:  # deleted since it was listed, or cleared: the controls keep their values
        return {"options": [gr.update() for _ in TR_NAMES]}
    t = presets[name].transcribe
    keys = {n for n, o in options_of(TranscribeOptions).items() if o.in_presets}
    return {"options": [shown_value(TranscribeOptions, n, getattr(t, n)) if n in keys else gr.update()
                        for n in TR_NAMES]}
