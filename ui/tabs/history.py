"""History tab layout: search, the song table (click a row), and beside it the picked song: player,
title, favourite, reuse, compare, extend / regenerate, downloads, delete, details."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from heartmula import GenerateOptions

from ..controls import control
from ..handlers.history import HEADERS, NOT_FAVOURITE, SAME_SEED, SEED_CHOICES


@dataclass
class HistoryComponents:
    search: gr.Textbox
    favourites_only: gr.Checkbox
    status: gr.Markdown
    refresh_btn: gr.Button
    table: gr.Dataframe  # click a row to pick its song
    song: gr.Textbox  # hidden: the picked song's id (the API names songs by it too)
    now: gr.Markdown  # the picked song's title and facts, above its player
    player: gr.Audio
    title: gr.Textbox
    save_title_btn: gr.Button
    favourite_btn: gr.Button
    downloads: gr.File
    details: gr.JSON
    reuse_btn: gr.Button
    reuse_seed: gr.Radio
    variants_btn: gr.Button
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
    search = gr.Textbox(label="Search songs", placeholder="Search titles, tags and lyrics", show_label=False,
                        elem_id="hist-search")
    with gr.Row(equal_height=True):
        favourites_only = gr.Checkbox(label="Favourites only", value=False, scale=0, min_width=170,
                                      elem_id="hist-favs")
        refresh_btn = gr.Button("Refresh list", size="sm", scale=0, min_width=110, elem_id="hist-refresh")
    status = gr.Markdown(elem_id="hist-status")
    # any id may come in (the API names songs made after the page was built); History checks it
    song = gr.Textbox(visible=False, elem_id="hist-song")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            table = gr.Dataframe(headers=HEADERS, datatype=["str"] * len(HEADERS), interactive=False, max_height=560,
                                 wrap=True, elem_id="hist-table",
                                 column_widths=["4%", "21%", "16%", "9%", "9%", "12%", "15%", "14%"])
        # the player column stays beside the list (sticky on a long page), so browsing never hides it
        with gr.Column(scale=2, elem_id="hist-side"):
            now = gr.Markdown("*Click a song in the list to play it.*", elem_id="hist-now")
            player = gr.Audio(label="Play", type="filepath", interactive=False, elem_id="hist-player")
            with gr.Row(equal_height=True):
                title = gr.Textbox(label="Title", placeholder="blank: the first lyric line", scale=3,
                                   elem_id="hist-title")
                save_title_btn = gr.Button("Save title", scale=1, min_width=90, elem_id="hist-save-title")
            favourite_btn = gr.Button(NOT_FAVOURITE, interactive=False, elem_id="hist-fav")
            with gr.Row():
                reuse_btn = gr.Button("Reuse settings in Generate", elem_id="hist-reuse")
                reuse_seed = gr.Radio(SEED_CHOICES, value=SAME_SEED, label="Seed when reusing", elem_id="hist-reuse-seed")
            variants_btn = gr.Button("Compare with its variants", elem_id="hist-variants")
            with gr.Accordion("Extend or regenerate this song", open=True, elem_id="hist-continue"):
                with gr.Row():
                    extend_s = gr.Number(label="Seconds to add", value=10, elem_id="hist-extend-s")  # checked by the handler, in its words
                    extend_btn = gr.Button("Extend…", elem_id="hist-extend")
                with gr.Row():
                    regen_at = gr.Textbox(label="Regenerate from (m:ss)", value="0:02", elem_id="hist-regen-at")
                    regen_takes = control(GenerateOptions, "takes", 1, elem_id="hist-regen-takes")
                    regen_btn = gr.Button("Regenerate from…", elem_id="hist-regen")
                # as sent: the handlers answer a string, a blank or an out-of-range value in the
                # studio's words, where gradio's own checks log a traceback and answer vaguely
                extend_s.preprocess = lambda payload: payload  # (control() does this for regen_takes)
                continue_lyrics = gr.Textbox(label="Lyrics for the new part (blank: the song's own)", value="", lines=3,
                                             elem_id="hist-continue-lyrics")
                continue_status = gr.Markdown(elem_id="hist-continue-status")
            downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="hist-downloads")
            delete_btn = gr.Button("Delete song…", variant="stop", elem_id="hist-delete")
            with gr.Row(visible=False, elem_id="hist-confirm") as confirm_row:
                confirm_text = gr.Markdown(elem_id="hist-confirm-text")
                confirm_btn = gr.Button("Yes, delete it", variant="stop", elem_id="hist-confirm-delete")
                cancel_btn = gr.Button("Keep it", elem_id="hist-keep")
            with gr.Accordion("Details (the song's sidecar)", open=False):
                details = gr.JSON(label="Details", elem_id="hist-details")
    return HistoryComponents(search=search, favourites_only=favourites_only, status=status, refresh_btn=refresh_btn,
                             table=table, song=song, now=now, player=player, title=title,
                             save_title_btn=save_title_btn, favourite_btn=favourite_btn, downloads=downloads,
                             details=details, reuse_btn=reuse_btn, reuse_seed=reuse_seed, variants_btn=variants_btn,
                             delete_btn=delete_btn, confirm_row=confirm_row, confirm_text=confirm_text,
                             confirm_btn=confirm_btn, cancel_btn=cancel_btn, extend_s=extend_s, regen_at=regen_at,
                             regen_takes=regen_takes, continue_lyrics=continue_lyrics, extend_btn=extend_btn,
                             regen_btn=regen_btn, continue_status=continue_status)
