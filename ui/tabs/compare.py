"""Compare tab layout: one prompt and seed, 2-4 presets, a speed table and a player per preset."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..handlers.compare import HEADERS, MAX_PRESETS
from ..handlers.generate import EXAMPLE_LYRICS, EXAMPLE_TAGS
from ..session import Session


@dataclass
class CompareComponents:
    session: gr.State
    presets: gr.CheckboxGroup
    lyrics: gr.Textbox
    tags: gr.Textbox
    duration_s: gr.Slider
    seed: gr.Number
    run_btn: gr.Button
    stop_btn: gr.Button
    status: gr.Markdown
    table: gr.Dataframe
    audios: list


def build(presets: list[str]) -> CompareComponents:
    session = gr.State(Session())
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            lyrics = gr.Textbox(label="Lyrics", value=EXAMPLE_LYRICS, lines=8, elem_id="cmp-lyrics")
            tags = gr.Textbox(label="Style tags", value=EXAMPLE_TAGS, elem_id="cmp-tags")
        with gr.Column(scale=2):
            presets = gr.CheckboxGroup(label=f"Presets to compare (2 to {MAX_PRESETS})", choices=presets,
                                       elem_id="cmp-presets")
            duration_s = gr.Slider(1, 600, value=30, step=1, label="Maximum length (seconds), the same for all",
                                   elem_id="cmp-duration")
            seed = gr.Number(label="Seed (the same for all)", value=1234, precision=0, elem_id="cmp-seed")
            with gr.Row():
                run_btn = gr.Button("Compare", variant="primary", elem_id="cmp-run")
                stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="cmp-stop")
            status = gr.Markdown(elem_id="cmp-status")
    table = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="cmp-table")
    with gr.Row():
        audios = [gr.Audio(label=f"Preset {i + 1}", type="filepath", interactive=False, visible=False,
                           elem_id=f"cmp-audio-{i + 1}") for i in range(MAX_PRESETS)]
    return CompareComponents(session=session, presets=presets, lyrics=lyrics, tags=tags, duration_s=duration_s,
                             seed=seed, run_btn=run_btn, stop_btn=stop_btn, status=status, table=table, audios=audios)
