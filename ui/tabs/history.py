"""History tab layout: the song table, a picker, player, downloads, details, reuse and delete."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..handlers.history import HEADERS, SAME_SEED, SEED_CHOICES


@dataclass
class HistoryComponents:
    status: gr.Markdown
    refresh_btn: gr.Button
    table: gr.Dataframe
    song: gr.Dropdown
    player: gr.Audio
    downloads: gr.File
    details: gr.JSON
    reuse_btn: gr.Button
    reuse_seed: gr.Radio
    delete_btn: gr.Button
    confirm_row: gr.Row  # shown by Delete: the song's name, then confirm or keep
    confirm_text: gr.Markdown
    confirm_btn: gr.Button
    cancel_btn: gr.Button
    extend_s: gr.Number  # seconds to add
    regen_at: gr.Textbox  # m:ss to regenerate from
    regen_takes: gr.Slider
    continue_lyrics: gr.Textbox  # blank: the song's own lyrics
    extend_btn: gr.Button
    regen_btn: gr.Button
    continue_status: gr.Markdown


def build() -> HistoryComponents:
    with gr.Row():
        status = gr.Markdown(elem_id="hist-status")
        refresh_btn = gr.Button("↻ Refresh list", size="sm", scale=0, min_width=100, elem_id="hist-refresh")
    table = gr.Dataframe(headers=HEADERS, datatype=["str", "str", "number", "str", "number", "str", "str"],
                         interactive=False, max_height=300, wrap=True, elem_id="hist-table")
    # any id may come in (the API names songs made after the page was built); History checks it
    song = gr.Dropdown(label="Song", choices=[], allow_custom_value=True, elem_id="hist-song")
    with gr.Row(equal_height=False):
        with gr.Column():
            player = gr.Audio(label="Play", type="filepath", interactive=False, elem_id="hist-player")
            downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="hist-downloads")
            with gr.Row():
                reuse_btn = gr.Button("Reuse settings in Generate", elem_id="hist-reuse")
                reuse_seed = gr.Radio(SEED_CHOICES, value=SAME_SEED, label="Seed when reusing", elem_id="hist-reuse-seed")
            delete_btn = gr.Button("Delete song…", variant="stop", elem_id="hist-delete")
            with gr.Row(visible=False, elem_id="hist-confirm") as confirm_row:
                confirm_text = gr.Markdown(elem_id="hist-confirm-text")
                confirm_btn = gr.Button("Yes, delete it", variant="stop", elem_id="hist-confirm-delete")
                cancel_btn = gr.Button("Keep it", elem_id="hist-keep")
        with gr.Column():
            with gr.Accordion("Extend or regenerate this song", open=True):
                with gr.Row():
                    extend_s = gr.Number(label="Seconds to add", value=10, minimum=0, elem_id="hist-extend-s")
                    extend_btn = gr.Button("Extend…", elem_id="hist-extend")
                with gr.Row():
                    regen_at = gr.Textbox(label="Regenerate from (m:ss)", value="0:02", elem_id="hist-regen-at")
                    regen_takes = gr.Slider(1, 8, value=1, step=1, label="Takes", elem_id="hist-regen-takes")
                    regen_btn = gr.Button("Regenerate from…", elem_id="hist-regen")
                continue_lyrics = gr.Textbox(label="Lyrics for the new part (blank: the song's own)", lines=3,
                                             elem_id="hist-continue-lyrics")
                continue_status = gr.Markdown(elem_id="hist-continue-status")
            details = gr.JSON(label="Details", elem_id="hist-details")
    return HistoryComponents(status=status, refresh_btn=refresh_btn, table=table, song=song, player=player,
                             downloads=downloads, details=details, reuse_btn=reuse_btn, reuse_seed=reuse_seed,
                             delete_btn=delete_btn, confirm_row=confirm_row, confirm_text=confirm_text,
                             confirm_btn=confirm_btn, cancel_btn=cancel_btn, extend_s=extend_s, regen_at=regen_at,
                             regen_takes=regen_takes, continue_lyrics=continue_lyrics, extend_btn=extend_btn,
                             regen_btn=regen_btn, continue_status=continue_status)
