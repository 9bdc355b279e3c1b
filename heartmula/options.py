"""User-facing options, each declared once on its dataclass field.

A field declared with `option(...)` carries its label, range, step, unit and help text.
Everything else is built from that declaration: the option's check (`check_options`, called
by the dataclass's `__post_init__`), the studio's sliders and Settings table, the preset
schema, the CLI flags and the API's parameter docs. A new field needs no other edit.

Values are stored in the unit the engine uses (`unit`); where people think in another
(`max_audio_length_ms` in seconds), `shown_unit` and `to_shown`/`from_shown` convert, in
this one place.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

# What `unit` -> `shown_unit` multiplies by. Only conversions listed here exist.
_SCALE = {("ms", "s"): 1e-3, ("s", "s"): 1.0, ("", ""): 1.0}


@dataclass(frozen=True)
class Option:
    """One option's declaration (in the dataclass field's metadata)."""

    label: str
    help: str
    kind: type  # int, float, bool or str: the stored value's type
    lo: float | None = None  # inclusive range of the stored value
    hi: float | None = None
    step: float | None = None  # slider step, in the shown unit
    unit: str = ""  # unit of the stored value
    shown_unit: str = ""  # unit people see and type (studio, API docs); defaults to `unit`
    nullable: bool = False  # None is a value (e.g. seed: None draws a fresh one)
    null_means: str = ""  # what None does, for help texts
    advanced: bool = False  # under "Advanced" in the studio
    in_presets: bool = True  # presets may set it (a language is the clip's, not a tuning choice)
    in_settings: bool = True  # Settings holds a default for it (a seed belongs to one run)
    choices: tuple = ()

    @property
    def scale(self) -> float:
        return _SCALE[(self.unit, self.shown_unit or self.unit)]

    def to_shown(self, value):
        if value is None or self.kind in (bool, str) or self.scale == 1.0:
            return value
        return value * self.scale

    def from_shown(self, value):
        """A shown-unit number back to the stored unit and type (ints rounded from seconds)."""
        if value is None or self.kind in (bool, str) or self.scale == 1.0:
            return value
        stored = value / self.scale
        return int(round(stored)) if self.kind is int else stored

    def range_text(self, shown: bool = False) -> str:
        if self.lo is None:
            return ", ".join(map(str, self.choices)) if self.choices else "any"
        unit = (self.shown_unit or self.unit) if shown else self.unit
        u = f" {unit}" if unit else ""
        return f"{self.number_text(self.lo, shown)} to {self.number_text(self.hi, shown)}{u}"

    def number_text(self, value, shown: bool = False) -> str:
        """As people read it: floats of float options keep their point (1.0), converted values drop it."""
        if shown and self.scale != 1.0:
            return f"{self.to_shown(value):g}"
        return repr(float(value)) if self.kind is float else str(value)


def option(default: Any, label: str, help: str, *, kind: type | None = None, **declared) -> Any:
    """A dataclass field that is a user-facing option."""
    kind = kind or type(default)
    return field(default=default, metadata={"option": Option(label=label, help=help, kind=kind, **declared)})


def options_of(cls_or_obj) -> dict[str, Option]:
    """name -> Option for every declared option of a dataclass, in field order."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(cls_or_obj) if "option" in f.metadata}


def defaults_of(cls) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls) if "option" in f.metadata}


def spec(cls, name: str) -> Option:
    return options_of(cls)[name]


def check_value(name: str, opt: Option, value) -> None:
    """ValueError naming the option, the value and what is allowed."""
    if value is None:
        if opt.nullable:
            return
        raise ValueError(f"{name} is empty; allowed: {opt.range_text()}")
    if opt.kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return
    if opt.kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {value!r}")
        if opt.choices and value not in opt.choices:
            raise ValueError(f"{name}={value!r} is not allowed; allowed: {', '.join(map(str, opt.choices))}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (opt.kind is int and not isinstance(value, int)):
        what = "a whole number" if opt.kind is int else "a number"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if opt.lo is not None and not opt.lo <= value <= opt.hi:
        raise ValueError(f"{name}={value!r} is out of range; allowed: {opt.range_text()}")


def check_options(obj) -> None:
    """Check every declared option of a dataclass instance (call from __post_init__)."""
    for name, opt in options_of(obj).items():
        check_value(name, opt, getattr(obj, name))


def parse_number(name: str, opt: Option, value):
    """A number from a form, the API or a YAML file, in the stored unit's type.

    Integral floats become ints for int options (sliders and JSON send 3.0); anything else that
    is not a number is a ValueError in the words `check_value` uses. Big ints stay exact."""
    if value is None or value == "":
        if opt.nullable:
            return None
        shown = name == shown_name(name, opt)  # the CLI names the option in its stored unit (ms)
        raise ValueError(f"{name} is empty; enter a number ({opt.range_text(shown=shown)})")
    if opt.kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if opt.kind is str:
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {text!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if opt.kind is int and isinstance(value, float) and opt.scale == 1.0:  # seconds of an int ms option may be 1.6
        if value != int(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        value = int(value)
    if opt.kind is float and isinstance(value, int):
        value = float(value)
    return value


def shown_name(name: str, opt: Option) -> str:
    """The option's name in its shown unit: max_audio_length_ms -> max_audio_length_s."""
    stored, shown = opt.unit, opt.shown_unit or opt.unit
    if stored != shown and name.endswith("_" + stored):
        return name[: -len(stored)] + shown
    return name


def from_shown_values(cls, values: dict, base=None):
    """A `cls` from values as people see them (the studio's controls, the API), over `base`.
    Raises ValueError naming every bad option by its label (what the page shows) and its name
    (what the API and the CLI take), in the unit it was given in, all in one message: refused
    one at a time, a form needs as many tries as it has mistakes. A value is refused, never
    moved into the range: a form that silently sent 8 for 100 takes was the bug."""
    opts = options_of(cls)
    changes, problems = {}, []
    for name, value in values.items():
        opt = opts[name]
        label = shown_name(name, opt)
        try:
            shown = parse_number(label, opt, value) if opt.kind is not str else value
            stored = opt.from_shown(shown) if shown is not None else None
            try:
                check_value(name, opt, stored)
            except ValueError:
                if opt.scale == 1.0:
                    raise
                raise ValueError(f"{label}={shown!r} is out of range; allowed: {opt.range_text(shown=True)}") from None
        except ValueError as e:
            problems.append(f"{opt.label}: {e}")
            continue
        changes[name] = stored
    if problems:
        raise ValueError("; ".join(problems))
    return dataclasses.replace(base if base is not None else cls(), **changes)


def shown_values(obj) -> dict[str, Any]:
    return {name: opt.to_shown(getattr(obj, name)) for name, opt in options_of(obj).items()}


def help_text(name: str, opt: Option, default=None, shown: bool = False) -> str:
    """One line for --help, API docs and tooltips: help, range and default."""
    unit = (opt.shown_unit or opt.unit) if shown else opt.unit
    parts = [opt.help]
    if opt.kind in (int, float):
        parts.append(f"allowed {opt.range_text(shown)}")
    if default is not None:
        d = opt.number_text(default, shown) if opt.kind in (int, float) else str(default)
        parts.append(f"default {d}{' ' + unit if unit and opt.kind in (int, float) else ''}")
    elif opt.nullable and opt.null_means:
        parts.append(f"default: {opt.null_means}")
    return "; ".join(parts)
