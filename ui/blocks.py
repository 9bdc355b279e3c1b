"""`build_ui(engine) -> gr.Blocks`: the header, five tabs, and their wiring."""

from __future__ import annotations

import warnings
from pathlib import Path

import gradio as gr

from heartmula import DEFAULT_PRESET, Engine, History, load_presets

from . import page, wiring
from .studio import Studio
from .tabs import compare, generate, history, settings, transcribe

DOWNLOAD_COMMAND = "python -m heartmula download --model-path ./ckpt"


def header(studio: Studio) -> str:
    c = studio.engine.config
    text = (f"# HeartMuLa Studio\nLyrics and style tags in, songs out · model **{c.version}** from "
            f"`{c.model_path}` on **{studio.engine.device}**")
    if studio.demo:  # one short line; the details open on a click
        text += (f"\n\n<details><summary>⚠️ <b>Demo weights: they make noise, not music.</b></summary>\n\n"
                 f"No model was found in the model folder, so the studio runs on small random demo weights to show "
                 f"how everything works. Download the real models with `{DOWNLOAD_COMMAND}` and start again with "
                 f"`--model-path ./ckpt`.\n\n</details>")
    return text


def build_ui(engine: Engine, *, output_dir: str | Path = "./outputs", demo: bool = False,
             studio: Studio | None = None, model_roots=(), temp_dir: str | Path | None = None) -> gr.Blocks:
    """The whole studio for one engine (passed in, shared by every session). `model_roots`:
    the folders the Settings tab may load models from (default: the one holding the model).
    `temp_dir`: this instance's temporary files (default: Studio's)."""
    extra = {"temp_dir": Path(temp_dir)} if temp_dir is not None else {}
    studio = studio or Studio(engine=engine, history=History(output_dir), demo=demo,
                              model_roots=tuple(Path(r) for r in model_roots), **extra)
    c = engine.config
    presets = list(load_presets()[0])
    default = DEFAULT_PRESET if DEFAULT_PRESET in presets else presets[0]
    with warnings.catch_warnings():
        # Gradio 6 would take css/head in launch(); app.py launches and stays as it is, and
        # these still apply from here (gradio only warns that they moved).
        warnings.filterwarnings("ignore", message="The parameters have been moved")
        blocks = gr.Blocks(title="HeartMuLa Studio", css=page.CSS, head=page.HEAD)
    with blocks:
        gr.Markdown(header(studio), elem_id="studio-header")
        with gr.Tabs(selected="generate") as tabs:
            with gr.Tab("Generate", id="generate"):
                gen = generate.build(presets, default)
            with gr.Tab("History", id="history"):
                hist = history.build()
            with gr.Tab("Transcribe", id="transcribe"):
                tr = transcribe.build(presets)
            with gr.Tab("Compare", id="compare"):
                cmp = compare.build(presets)
            with gr.Tab("Settings", id="settings"):
                st = settings.build(c.model_path, c.version, c.device, c.codec_device, c.dtype, c.lazy_load, presets,
                                    default, c.quant)
        wiring.wire(blocks, studio, tabs, gen, hist, tr, st, cmp)
    blocks.studio = studio  # for tests and app.py; handlers get it through partial
    return blocks
