"""Generate tab layout: lyrics, tags with quick picks, preset, advanced options, progress, takes."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from heartmula import GenerateOptions, options_of

from ..controls import control
from ..handlers.generate import EXAMPLE_LYRICS, EXAMPLE_TAGS, TAG_CHOICES
from ..session import Session

MAX_TAKES = options_of(GenerateOptions)["takes"].hi


@dataclass
class GenerateComponents:
    session: gr.State
    lyrics: gr.Textbox
    tags: gr.Textbox
    pickers: list  # gr.Dropdown per tag category
    preset: gr.Dropdown
    preset_info: gr.Markdown
    options: dict  # GenerateOptions field name -> its control, in declaration order
    dice: gr.Button
    generate_btn: gr.Button
    stop_btn: gr.Button
    status: gr.Markdown
    audios: list  # gr.Audio per take, unused ones hidden
    downloads: gr.File
    metadata: gr.JSON
    check_take: gr.Dropdown  # the take that Check lyrics, Extend… and Regenerate from… act on
    check_btn: gr.Button
    extend_btn: gr.Button
    regen_btn: gr.Button
    check_result: gr.Markdown
    live: gr.Audio  # streaming: take 1 while it is made
    live_note: gr.Markdown  # what is playable, and when take 1 starts
    page_timer: gr.Timer  # asks again while a left page's song is being finished (handlers.generate.page_status)
    play_now_btn: gr.Button  # start take 1 without waiting for it to play through
    hear_take: gr.Dropdown  # put another take's audio so far on its player


def build(presets: list[str], preset: str) -> GenerateComponents:
    session = gr.State(Session())
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            lyrics = gr.Textbox(label="Lyrics", value=EXAMPLE_LYRICS, lines=14, max_lines=40, elem_id="gen-lyrics",
                                info="Sections in [brackets]: [intro] [verse] [chorus] [bridge] [outro]")
            tags = gr.Textbox(label="Style tags", value=EXAMPLE_TAGS, lines=1, elem_id="gen-tags",
                              info="Comma-separated: genre, mood, instruments, voice")
            with gr.Row():
                pickers = [gr.Dropdown(label=f"+ {name}", choices=choices, value=None, min_width=120,
                                       elem_id=f"pick-{name.lower()}")
                           for name, choices in TAG_CHOICES.items()]
        with gr.Column(scale=2):
            preset = gr.Dropdown(label="Preset", choices=presets, value=preset, elem_id="gen-preset")
            preset_info = gr.Markdown(elem_id="gen-preset-info")
            specs = options_of(GenerateOptions)
            options = {name: control(GenerateOptions, name, elem_id=f"gen-{name}")
                       for name, opt in specs.items() if not opt.advanced}
            with gr.Accordion("Advanced (for this run; Settings holds the defaults)", open=False):
                for name, opt in specs.items():
                    if not opt.advanced:
                        continue
                    if name == "seed":
                        with gr.Row():
                            options[name] = control(GenerateOptions, name, elem_id="gen-seed", scale=4)
                            dice = gr.Button("Random seed", scale=1, min_width=80, elem_id="gen-dice")
                    else:
                        options[name] = control(GenerateOptions, name, elem_id=f"gen-{name}")
            options = {name: options[name] for name in specs}  # declaration order
            with gr.Row(elem_id="gen-actions"):
                generate_btn = gr.Button("Generate", variant="primary", elem_id="gen-generate")
                stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="gen-stop")
            status = gr.Markdown("Ready.", elem_id="gen-status")
            page_timer = gr.Timer(1.0, active=False)
    with gr.Row(equal_height=False, elem_id="gen-live-row"):
        with gr.Column(scale=3):
            live = gr.Audio(label="Live: take 1 plays here while it is made", streaming=True, autoplay=True,
                            interactive=False, elem_id="gen-live")
        with gr.Column(scale=2):
            live_note = gr.Markdown(elem_id="gen-live-note")
            play_now_btn = gr.Button("▶ Play what is ready", visible=False, elem_id="gen-play-now")
            hear_take = gr.Dropdown(label="Hear another take (its audio so far)", choices=[], value=None,
                                    visible=False, elem_id="gen-hear")
    with gr.Row():
        audios = [gr.Audio(label=f"Take {i + 1}", type="filepath", interactive=False, visible=False,
                           elem_id=f"gen-take-{i + 1}", buttons=["download"])
                  for i in range(MAX_TAKES)]
    with gr.Row(equal_height=False):
        with gr.Column():
            downloads = gr.File(label="Downloads (WAV, MP3, FLAC, metadata JSON)", file_count="multiple",
                                interactive=False, elem_id="gen-downloads")
            with gr.Row():
                check_take = gr.Dropdown(label="Take", choices=[], scale=2, elem_id="gen-take")
                check_btn = gr.Button("Check lyrics", scale=1, elem_id="gen-check")
                extend_btn = gr.Button("Extend…", scale=1, elem_id="gen-extend")
                regen_btn = gr.Button("Regenerate from…", scale=1, elem_id="gen-regen")
            check_result = gr.Markdown(elem_id="gen-check-result")
        with gr.Column():
            metadata = gr.JSON(label="Metadata", elem_id="gen-metadata")
    return GenerateComponents(
        session=session, lyrics=lyrics, tags=tags, pickers=pickers, preset=preset, preset_info=preset_info,
        options=options, dice=dice, generate_btn=generate_btn, stop_btn=stop_btn, status=status, audios=audios,
        downloads=downloads, metadata=metadata, check_take=check_take, check_btn=check_btn, check_result=check_result,
        extend_btn=extend_btn, regen_btn=regen_btn,
        live=live, live_note=live_note, play_now_btn=play_now_btn, hear_take=hear_take, page_timer=page_timer,
    )
