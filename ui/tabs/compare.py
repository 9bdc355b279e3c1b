"""Compare tab layout: one prompt and seed under 2-4 presets (a speed table, a player per preset), and a
song beside its variants (sent from History)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from heartmula import GenerateOptions

from ..controls import control
from ..handlers.compare import HEADERS, MAX_PRESETS
from ..handlers.history import FAMILY_HEADERS, FAMILY_PLAYERS
from ..handlers.generate import EXAMPLE_LYRICS, EXAMPLE_TAGS
from ..session import Session


@dataclass
class CompareComponents:
    session: gr.State
    presets: gr.CheckboxGroup
    lyrics: gr.Textbox
    tags: gr.Textbox
    length: gr.Slider  # max_audio_length_ms, shown in seconds
    seed: gr.Textbox
    run_btn: gr.Button
    stop_btn: gr.Button
    status: gr.Markdown
    table: gr.Dataframe
    audios: list
    family_note: gr.Markdown  # a song and its variants, from History's "Compare with its variants"
    family_table: gr.Dataframe
    family_audios: list


def build(presets: list[str]) -> CompareComponents:
    session = gr.State(Session())
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            lyrics = gr.Textbox(label="Lyrics", value=EXAMPLE_LYRICS, lines=8, elem_id="cmp-lyrics")
            tags = gr.Textbox(label="Style tags", value=EXAMPLE_TAGS, elem_id="cmp-tags")
        with gr.Column(scale=2):
            presets = gr.CheckboxGroup(label=f"Presets to compare (2 to {MAX_PRESETS})", choices=presets,
                                       elem_id="cmp-presets")
            length = control(GenerateOptions, "max_audio_length_ms", 30_000, elem_id="cmp-duration")
            seed = control(GenerateOptions, "seed", None, elem_id="cmp-seed")
            with gr.Row():
                run_btn = gr.Button("Compare", variant="primary", elem_id="cmp-run")
                stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="cmp-stop")
            status = gr.Markdown(elem_id="cmp-status")
    table = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="cmp-table")
    with gr.Row():
        audios = [gr.Audio(label=f"Preset {i + 1}", type="filepath", interactive=False, visible=False,
                           elem_id=f"cmp-audio-{i + 1}") for i in range(MAX_PRESETS)]
    with gr.Accordion("A song and its variants", open=True, elem_id="cmp-family"):
        family_note = gr.Markdown("In History, pick a song and press **Compare with its variants** to hear it beside "
                                  "its extensions and regenerations.", elem_id="cmp-family-note")
        family_table = gr.Dataframe(headers=FAMILY_HEADERS, interactive=False, elem_id="cmp-family-table")
        with gr.Row():
            family_audios = [gr.Audio(type="filepath", interactive=False, visible=False,
                                      elem_id=f"cmp-family-{i + 1}") for i in range(FAMILY_PLAYERS)]
    return CompareComponents(session=session, presets=presets, lyrics=lyrics, tags=tags, length=length,
                             seed=seed, run_btn=run_btn, stop_btn=stop_btn, status=status, table=table, audios=audios,
                             family_note=family_note, family_table=family_table, family_audios=family_audios)
