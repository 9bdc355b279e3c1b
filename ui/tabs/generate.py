"""Generate tab layout: lyrics, tags with quick picks, preset, advanced options, progress, takes."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from heartmula import MAX_TAKES

from ..handlers.generate import EXAMPLE_LYRICS, EXAMPLE_TAGS, TAG_CHOICES
from ..session import Session


@dataclass
class GenerateComponents:
    session: gr.State
    lyrics: gr.Textbox
    tags: gr.Textbox
    pickers: list  # gr.Dropdown per tag category
    duration_s: gr.Slider
    preset: gr.Dropdown
    preset_info: gr.Markdown
    cfg_scale: gr.Slider
    temperature: gr.Slider
    topk: gr.Slider
    seed: gr.Number
    dice: gr.Button
    takes: gr.Slider
    generate_btn: gr.Button
    stop_btn: gr.Button
    status: gr.Markdown
    audios: list  # gr.Audio per take, unused ones hidden
    downloads: gr.File
    metadata: gr.JSON
    check_take: gr.Dropdown
    check_btn: gr.Button
    check_result: gr.Markdown


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
            preset_info = gr.Markdown()
            duration_s = gr.Slider(1, 600, value=120, step=1, label="Maximum length (seconds)", elem_id="gen-duration")
            with gr.Accordion("Advanced", open=False):
                cfg_scale = gr.Slider(1.0, 10.0, value=1.5, step=0.05, label="Guidance (cfg_scale)",
                                      info="1.0 turns guidance off (twice as fast)")
                temperature = gr.Slider(0.05, 5.0, value=1.0, step=0.05, label="Temperature")
                topk = gr.Slider(1, 1024, value=50, step=1, label="Top-k")
                with gr.Row():
                    seed = gr.Number(label="Seed (-1: random)", value=-1, precision=0, scale=4, elem_id="gen-seed")
                    dice = gr.Button("🎲", scale=1, min_width=50, elem_id="gen-dice")
                takes = gr.Slider(1, MAX_TAKES, value=1, step=1, label="Takes", info="Variations generated together")
            with gr.Row():
                generate_btn = gr.Button("Generate", variant="primary", elem_id="gen-generate")
                stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="gen-stop")
            status = gr.Markdown("Ready.", elem_id="gen-status")
    with gr.Row():
        audios = [gr.Audio(label=f"Take {i + 1}", type="filepath", interactive=False, visible=False,
                           elem_id=f"gen-take-{i + 1}", buttons=["download"])
                  for i in range(MAX_TAKES)]
    with gr.Row(equal_height=False):
        with gr.Column():
            downloads = gr.File(label="Downloads (WAV, MP3, FLAC, metadata JSON)", file_count="multiple",
                                interactive=False, elem_id="gen-downloads")
            with gr.Row():
                check_take = gr.Dropdown(label="Take to check", choices=[], scale=2)
                check_btn = gr.Button("Check lyrics", scale=1, elem_id="gen-check")
            check_result = gr.Markdown(elem_id="gen-check-result")
        with gr.Column():
            metadata = gr.JSON(label="Metadata", elem_id="gen-metadata")
    return GenerateComponents(
        session=session, lyrics=lyrics, tags=tags, pickers=pickers, duration_s=duration_s, preset=preset,
        preset_info=preset_info, cfg_scale=cfg_scale, temperature=temperature, topk=topk, seed=seed, dice=dice,
        takes=takes, generate_btn=generate_btn, stop_btn=stop_btn, status=status, audios=audios,
        downloads=downloads, metadata=metadata, check_take=check_take, check_btn=check_btn, check_result=check_result,
    )
