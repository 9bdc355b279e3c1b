"""Settings tab layout: model and device, presets (every option as a slider), live throughput, doctor."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from heartmula import device_choices

from ..controls import control
from ..handlers.settings import PRECISIONS, QUANT_CHOICES, SAME, SETTINGS_FIELDS

@dataclass
class SettingsComponents:
    engine_status: gr.Markdown
    model_path: gr.Textbox
    scan_btn: gr.Button
    found: gr.Markdown
    version: gr.Dropdown
    device: gr.Dropdown
    codec_device: gr.Dropdown
    dtype: gr.Dropdown
    quant: gr.Dropdown
    quant_note: gr.Markdown  # a weights choice (by hand or from a preset) that only a Load applies
    lazy_load: gr.Checkbox
    load_btn: gr.Button
    unload_btn: gr.Button
    live: gr.Markdown
    timer: gr.Timer
    preset: gr.Dropdown
    preset_note: gr.Markdown
    preset_problems: gr.Markdown  # preset files that did not load: file, key, reason
    fields: dict  # option name -> its control (SETTINGS_FIELDS: GenerateOptions, then TranscribeOptions)
    values_note: gr.Markdown
    new_name: gr.Textbox
    description: gr.Textbox
    save_btn: gr.Button
    delete_btn: gr.Button
    doctor_btn: gr.Button
    doctor: gr.Textbox


def build(model_path: str, version: str, device: str, codec_device: str | None, dtype: str, lazy_load: bool,
          presets: list[str], preset: str, quant: str = "none") -> SettingsComponents:
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("### Model and device")
            engine_status = gr.Markdown(elem_id="set-engine")
            with gr.Row():
                model_path_box = gr.Textbox(label="Model folder", value=model_path, scale=4, elem_id="set-path")
                scan_btn = gr.Button("Scan", scale=1, min_width=80)
            found = gr.Markdown(elem_id="set-found")
            with gr.Row():
                version_dd = gr.Dropdown(label="Version", choices=[version], value=version, elem_id="set-version")
                choices = device_choices()
                choices += [d for d in (device, codec_device) if d and d not in choices]  # as started
                device_dd = gr.Dropdown(label="Device (language model)", choices=choices, value=device,
                                        elem_id="set-device")
                # wide enough for its longest choice ("same as the language model"): the row wraps first
                codec_dd = gr.Dropdown(label="Codec device", info="another card decodes while the next song generates",
                                       choices=[SAME, *choices], value=codec_device or SAME, min_width=260, scale=2,
                                       elem_id="set-codec-device")
                dtype_dd = gr.Dropdown(label="Precision", choices=PRECISIONS, value=dtype, elem_id="set-dtype")
            quant_dd = gr.Dropdown(label="Language model weights", choices=QUANT_CHOICES, value=quant,
                                   elem_id="set-quant",
                                   info="int8 halves the language model's memory and reads; experimental until "
                                        "checked on the real checkpoint; a preset may set it, and **Load** applies it")
            quant_note = gr.Markdown(elem_id="set-quant-note")
            lazy = gr.Checkbox(label="Lazy load (free each model after its phase: less memory, slower)",
                               value=lazy_load)
            with gr.Row():
                load_btn = gr.Button("Load", variant="primary", elem_id="set-load")
                unload_btn = gr.Button("Unload", elem_id="set-unload")
            gr.Markdown("### Live throughput")
            live = gr.Markdown(elem_id="set-live")
            timer = gr.Timer(1.0)
            with gr.Accordion("Doctor", open=False):
                doctor_btn = gr.Button("Run the doctor", elem_id="set-doctor-run")
                doctor = gr.Textbox(label="Report", lines=12, interactive=False, elem_id="set-doctor")
        with gr.Column():
            gr.Markdown("### Presets")
            preset = gr.Dropdown(label="Preset", choices=presets, value=preset, elem_id="set-preset")
            preset_note = gr.Markdown(elem_id="set-preset-note")
            preset_problems = gr.Markdown(elem_id="set-preset-problems")
            gr.Markdown("These are the defaults: a change applies to the next run on the Generate and Transcribe "
                        "tabs (whose controls it sets), and **Save preset** keeps them.", elem_id="set-defaults-note")
            fields = {name: control(cls, name, elem_id=f"set-{name}") for name, cls in SETTINGS_FIELDS.items()}
            values_note = gr.Markdown(elem_id="set-values-note")  # what a run would refuse, as it is typed
            description = gr.Textbox(label="Description", elem_id="set-description")
            with gr.Row():
                new_name = gr.Textbox(label="Save as", placeholder="my preset", scale=3, elem_id="set-new-name")
                save_btn = gr.Button("Save preset", variant="primary", scale=1, elem_id="set-save")
            delete_btn = gr.Button("Delete this preset", variant="stop", elem_id="set-delete")
    return SettingsComponents(
        engine_status=engine_status, model_path=model_path_box, scan_btn=scan_btn, found=found, version=version_dd,
        device=device_dd, codec_device=codec_dd, dtype=dtype_dd, quant=quant_dd, quant_note=quant_note,
        lazy_load=lazy, load_btn=load_btn, unload_btn=unload_btn, live=live,
        timer=timer, preset=preset, preset_note=preset_note, preset_problems=preset_problems, fields=fields, values_note=values_note, new_name=new_name,
        description=description, save_btn=save_btn, delete_btn=delete_btn, doctor_btn=doctor_btn, doctor=doctor,
    )
