"""Which request shapes a studio warms in the background, most likely first.

What a request compiles and captures depends on its shape: the takes, guidance on or off and the
top-k bound. Its length does not, once the engine's caches are reserved for every position
(`Engine.reserve_for`): every attention bucket of every shape is captured once. A musician
starts from a preset and changes the takes or the guidance; those are the shapes worth having ready.
"""

from __future__ import annotations

from dataclasses import replace

from .mula.generate import GenerateOptions
from .mula.graphed_step import request_shape

LIKELY_TAKES = (1, 2, 4, 3)  # after the presets' own: the takes people pick, most picked first


def shape_of(opts: GenerateOptions) -> tuple:
    """What decides a request's compiled code and graphs (requests alike here share them)."""
    return request_shape(opts)[:3]


def likely_shapes(presets: dict, default: str) -> list[GenerateOptions]:
    """The default preset's request; every other preset's; then, at the default's length, takes
    1, 2, 4 and 3 with guidance as the default has it and then the other way. Each shape once."""
    base = presets[default].generate if default in presets else GenerateOptions()
    candidates = [base] + [p.generate for name, p in presets.items() if name != default]
    off = 1.0 if base.guided else 1.5  # guidance turned the other way (1.0 is off)
    for cfg in (base.cfg_scale, off):
        candidates += [replace(base, takes=t, cfg_scale=cfg) for t in LIKELY_TAKES]
    out, seen = [], set()
    for opts in candidates:
        if shape_of(opts) not in seen:
            seen.add(shape_of(opts))
            out.append(opts)
    return out
