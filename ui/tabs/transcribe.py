"""Transcribe tab layout: a clip in, the transcript, timed segments and files out."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from heartmula import TranscribeOptions, options_of

from ..controls import control
from ..handlers.transcribe import HEADERS
from ..session import Session


@dataclass
class TranscribeComponents:
    session: gr.State
    audio: gr.Audio
    preset: gr.Dropdown
    options: dict  # TranscribeOptions field name -> its control, in declaration order
    run_btn: gr.Button
    stop_btn: gr.Button
    speed: gr.Markdown
    text: gr.Textbox
    segments: gr.Dataframe
    downloads: gr.File


def build(presets: list[str]) -> TranscribeComponents:
    session = gr.State(Session())
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            audio = gr.Audio(label="Clip (upload or record)", sources=["upload", "microphone"], type="filepath",
                             elem_id="tr-audio")
            preset = gr.Dropdown(label="Settings from preset", choices=presets, value=None, elem_id="tr-preset")
            options = {name: control(TranscribeOptions, name, elem_id=f"tr-{name.replace('_', '-')}")
                       for name in options_of(TranscribeOptions)}
            with gr.Row():
                run_btn = gr.Button("Transcribe", variant="primary", elem_id="tr-run")
                stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="tr-stop")
            speed = gr.Markdown(elem_id="tr-speed")
        with gr.Column(scale=3):
            text = gr.Textbox(label="Transcript", lines=6, interactive=False, elem_id="tr-text")
            segments = gr.Dataframe(headers=HEADERS, datatype=["number", "number", "str"], interactive=False,
                                    max_height=300, wrap=True, elem_id="tr-segments")
            downloads = gr.File(label="Downloads (TXT, LRC, SRT)", file_count="multiple", interactive=False,
                                elem_id="tr-downloads")
    return TranscribeComponents(session=session, audio=audio, preset=preset, options=options, run_btn=run_btn,
                                stop_btn=stop_btn,
                                speed=speed, text=text, segments=segments, downloads=downloads)
