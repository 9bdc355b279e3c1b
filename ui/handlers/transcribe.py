"""Transcribe tab: an uploaded or recorded clip -> text, timed segments, TXT/LRC/SRT files."""

from __future__ import annotations

import time
from pathlib import Path

from heartmula import RTF_LABEL, TranscribeSettings, format_transcript, load_presets

from .common import fmt_s, follow, reports_end, run_job

HEADERS = ["Start (s)", "End (s)", "Text"]


@reports_end("speed")
def transcribe(studio, session, audio_path, batch_size, chunk_length_s, language):
    """Generator: a status line, then the transcript, its segments and files."""
    if not audio_path:
        raise ValueError("upload or record a clip first")
    settings = TranscribeSettings(batch_size=int(batch_size), chunk_length_s=float(chunk_length_s))
    language = (language or "").strip() or None
    transcriber = studio.transcriber()
    started = time.monotonic()
    studio.stats.start("transcribe")
    try:
        job = run_job(lambda on_progress, should_stop: transcriber.transcribe(
            str(audio_path), batch_size=settings.batch_size, chunk_length_s=settings.chunk_length_s,
            language=language, should_stop=should_stop), session.cancel)
        result = yield from follow(job, lambda _: {
            "speed": f"⏳ Transcribing with {transcriber.model_name}… {fmt_s(time.monotonic() - started)}"})
        studio.stats.transcription_done(result)
    finally:
        studio.stats.finish()
    stem = Path(str(audio_path)).stem[:40] or "transcript"
    files = []
    for fmt in ("txt", "lrc", "srt"):
        path = studio.temp_path(f"{stem}.{fmt}")
        path.write_text(format_transcript(result, fmt), encoding="utf-8")
        files.append(str(path))
    demo = " (English only)" if result.is_demo and "English" not in result.model_name else ""
    yield {
        "text": result.text,
        "segments": [[round(s.start_s, 2), round(s.end_s, 2), s.text] for s in result.segments],
        "downloads": files,
        "speed": (f"⏱ {fmt_s(result.elapsed_s)} for {fmt_s(result.duration_s)} of audio · "
                  f"**{RTF_LABEL}: {result.real_time_factor:.3f}** · {result.model_name}{demo}"),
    }


def preset_settings(name: str | None) -> dict:
    """The transcription settings of a preset, for the tab's sliders."""
    presets, _ = load_presets()
    if name not in presets:
        return {}
    t = presets[name].transcribe
    return {"batch_size": t.batch_size, "chunk_length_s": t.chunk_length_s}
