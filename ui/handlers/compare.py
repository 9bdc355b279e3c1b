"""Compare tab: one prompt and seed under 2-4 presets, one after another; speed table + players."""

from __future__ import annotations

import gradio as gr

from heartmula import GenerateOptions, GenerationCancelled, fresh_seed, from_shown_values, load_presets, write_audio

from ..controls import form_values
from .common import ProgressLine, fmt_bytes, follow, reports_end, run_job, takes_turn

MAX_PRESETS = 4
HEADERS = ["Preset", "Frames/s", "Generation (s)", "Decode (s)", "Total (s)", "Peak memory", "Audio (s)"]


def compare_options(names, max_audio_length_s, seed) -> dict[str, GenerateOptions]:
    """Each picked preset's options for this comparison (ValueError for a bad pick or value)."""
    names = list(names or [])
    if not 2 <= len(names) <= MAX_PRESETS:
        raise ValueError(f"pick 2 to {MAX_PRESETS} presets to compare (picked {len(names)})")
    presets, _ = load_presets()
    missing = [n for n in names if n not in presets]
    if missing:
        raise ValueError(f"no preset named {', '.join(map(repr, missing))}")
    shared = form_values(GenerateOptions, ["max_audio_length_ms", "seed"], [max_audio_length_s, seed])
    if shared["seed"] is None:  # blank: one fresh seed, the same for every preset (they start alike)
        shared["seed"] = fresh_seed()
    return {n: from_shown_values(GenerateOptions, {**shared, "takes": 1}, base=presets[n].generate) for n in names}


def check_compare(studio, names, lyrics, tags, max_audio_length_s, seed) -> None:
    """What `compare` would refuse before it runs: the picks, the values, the texts (ValueError)."""
    for opts in compare_options(names, max_audio_length_s, seed).values():
        studio.engine.check_request(lyrics, tags, opts)


@reports_end("status")
@takes_turn("a comparison", "status", check=check_compare)
def compare(studio, session, names, lyrics, tags, max_audio_length_s, seed):
    """Generator: progress per preset, the table growing as each finishes, a player per preset."""
    names = list(names or [])
    options = compare_options(names, max_audio_length_s, seed)
    presets, _ = load_presets()
    engine = studio.engine
    rows, audios = [], [gr.update(value=None, visible=False, label="")] * MAX_PRESETS
    yield {"table": rows, "audios": audios}
    for i, name in enumerate(names):
        line = ProgressLine()
        studio.stats.start("compare")
        try:
            job = run_job(lambda **kw: engine.generate(lyrics, tags, options[name], **kw), session.cancel,
                          on_progress=studio.stats.progress)
            try:
                result = yield from follow(
                    job, lambda p: {"status": f"**{name}** ({i + 1}/{len(names)}) · {line(p)}"})
            except GenerationCancelled:
                if not rows:
                    raise  # nothing finished: the usual "Stopped. Nothing was saved."
                # The finished presets' rows and players stay on the page: say so, not "nothing"
                done = ", ".join(r[0] for r in rows)
                yield {"status": f"⏹ Stopped during {name}: {len(rows)} of {len(names)} presets compared "
                                 f"({done}), shown below; comparisons are not kept in History"}
                return
            studio.stats.generation_done(result)
        finally:
            studio.stats.finish()
        path = studio.temp_path(f"compare-{name}.wav".replace(" ", "_"))
        write_audio(path, result.audio[0], result.sample_rate)  # temporary: compare renders stay out of History
        rows.append([name, round(result.frames_per_s, 2), round(result.prompt_s + result.frames_s, 2),
                     round(result.decode_s, 2), round(result.total_s, 2),
                     fmt_bytes(result.peak_memory_bytes) if result.peak_memory_bytes else "not reported",
                     round(result.durations_s[0], 2)])
        audios = list(audios)
        audios[i] = gr.update(value=str(path), visible=True, label=f"{name} · seed {result.seeds[0]}")
        yield {"table": rows, "audios": audios}
    # A preset's weights (quant) apply at load: every preset ran on the model loaded now.
    loaded = engine.config.quant
    other = [n for n in names if presets[n].quant not in (None, loaded)]
    note = "".join(f" · {n} asks for {presets[n].quant} weights, but ran with the loaded ones ({loaded}): "
                   f"Load it on Settings to hear its weights" for n in other)
    yield {"status": f"✅ compared {len(names)} presets · seed {options[names[0]].seed}{note}"}

