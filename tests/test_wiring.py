"""ui/wiring.py's glue between handlers (which return {name: value}) and gradio's events."""

from __future__ import annotations

import asyncio

import gradio as gr

from ui.wiring import _named


def test_a_handler_that_changes_nothing_leaves_every_output_as_it_is():
    """Reviewer: every Settings preset pick without `quant` raised in gradio ("didn't return enough
    output values (needed: 2, returned: 1)"): the weights handler returned {}, which gradio takes
    for one value, not for "no changes"."""
    with gr.Blocks() as demo:
        quant, note, button = gr.Dropdown(choices=["none", "int8"]), gr.Markdown(), gr.Button()
        handler = _named(lambda: {}, {"quant": quant, "quant_note": note})
        button.click(handler, None, [quant, note])
    fn = demo.fns[0] if isinstance(demo.fns, list) else next(iter(demo.fns.values()))
    out = asyncio.run(demo.postprocess_data(fn, handler(), None))
    assert len(out) == 2
