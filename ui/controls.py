"""Controls built from the engine's option declarations: one slider, checkbox or box per
option, with its label, range, step, unit and help as declared (heartmula/options.py).

A control shows the option in its shown unit (length in seconds). Its values go back to
the engine through `heartmula.from_shown_values`, which checks them; nothing here
re-validates. Seeds are text boxes: a number box would carry them through a float and
round anything past 2**53.
"""

from __future__ import annotations

import gradio as gr

from heartmula import Option, help_text, options_of


def label_of(opt: Option) -> str:
    unit = opt.shown_unit or opt.unit
    return f"{opt.label} ({unit})" if unit and opt.kind in (int, float) else opt.label


def control(cls, name: str, value=None, *, elem_id: str, **kw):
    """The control for option `name` of `cls` (value in the stored unit; None: the default)."""
    opt = options_of(cls)[name]
    default = getattr(cls(), name)
    shown = opt.to_shown(default if value is None else value)
    info = help_text(name, opt, default, shown=True)
    if opt.kind is bool:
        return gr.Checkbox(label=opt.label, value=bool(shown), info=info, elem_id=elem_id, **kw)
    if opt.nullable and opt.kind is int:  # a seed: exact, and blank for "none"
        return gr.Textbox(label=f"{opt.label} (blank: random)", value="" if shown is None else str(shown),
                          info=info, elem_id=elem_id, **kw)
    if opt.kind is str:
        return gr.Textbox(label=opt.label, value=shown or "", info=info, elem_id=elem_id, **kw)
    slider = gr.Slider(opt.to_shown(opt.lo), opt.to_shown(opt.hi), value=shown, step=opt.step, label=label_of(opt),
                       info=info, elem_id=elem_id, **kw)
    # The value goes to the handler as sent: the option's own check (heartmula/options.py) then
    # answers a string, a None or an out-of-range number in the studio's words, where Gradio's
    # range check would answer an API client with an unnamed error or a TypeError.
    slider.preprocess = lambda payload: payload
    return slider


def shown_value(cls, name: str, value):
    """A stored value as its control shows it (for gr.update)."""
    opt = options_of(cls)[name]
    if opt.nullable and opt.kind is int:
        return "" if value is None else str(value)
    return opt.to_shown(value)


def form_values(cls, names: list[str], values) -> dict:
    """Control values (positional, in `names` order) -> {name: value} for from_shown_values;
    a blank box means "none" (for a seed: a fresh one). Anything else is checked as the CLI
    checks it: one range everywhere."""
    opts = options_of(cls)
    out = {}
    for name, value in zip(names, values):
        if opts[name].nullable and isinstance(value, str) and not value.strip():
            value = None
        out[name] = value
    return out
