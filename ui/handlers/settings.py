"""Settings tab: model folder, device, precision, load/unload, doctor, presets, live throughput."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gradio as gr

from heartmula import (DEFAULT_PRESET, QUANT_MODES, GenerateOptions, Preset, TranscribeOptions, delete_preset,
                       device_choices,
                       device_utilization, find_versions, from_shown_values, load_engine, load_presets, options_of,
                       preset_user_dir, run_doctor, save_preset)

from ..controls import shown_value
from ..errors import info, warning
from .common import fmt_bytes, fmt_s, weights_note, weights_text
from .generate import GEN_NAMES, apply_preset

SAME = "same as the language model"
PRECISIONS = ["auto", "bfloat16", "float16", "float32"]
# The language model's weights: the engine's modes, int8 labelled experimental until it has been
# checked on the real checkpoint (docs/performance.md has its figures on random weights).
QUANT_LABELS = {"none": "as the precision (no quantization)", "int8": "int8 (experimental: ~half the memory)"}
QUANT_CHOICES = [(QUANT_LABELS.get(m, m), m) for m in QUANT_MODES]

# The options Settings holds defaults for, in order: name -> its options class.
SETTINGS_FIELDS = {name: cls for cls in (GenerateOptions, TranscribeOptions)
                   for name, opt in options_of(cls).items() if opt.in_settings and opt.in_presets}
PRESET_FIELDS = list(SETTINGS_FIELDS)


def engine_status(studio) -> str:
    e = studio.engine
    c = e.config
    loaded = [name for name, m in (("language model", e.mula), ("codec", e.codec)) if m is not None]
    demo = "  \n⚠️ **Demo weights: they make noise, not music.**" if studio.demo else ""
    codec = f" · codec on **{e.codec_device}**" if e.codec_device != e.device else ""
    return (f"**Model** `{c.model_path}` · version **{c.version}** · device **{e.device}** "
            f"({c.device} asked){codec} · precision **{str(e.dtype).replace('torch.', '')}** · "
            f"weights **{weights_text(c.quant)}** · lazy load {'on' if c.lazy_load else 'off'}  \n"
            f"Loaded now: {', '.join(loaded) or 'nothing (loads on first use)'}{demo}")


def engine_controls(studio) -> dict:
    """The Load controls' values for the engine loaded now (a page opened after a Load shows
    what that Load chose, so pressing Load again keeps it)."""
    c = studio.engine.config
    return {"model_path": str(c.model_path), "version": gr.update(choices=[c.version], value=c.version),
            "device": c.device, "codec_device": c.codec_device or SAME, "dtype": c.dtype, "quant": c.quant,
            "lazy_load": bool(c.lazy_load)}


def scan_folder(model_path: str, current: str | None = None, *, studio=None) -> dict:
    """What a model folder holds: HeartMuLa versions, codec, transcriber. With a studio
    (as the UI wires it), only folders inside its allowed model roots are looked at."""
    if not str(model_path or "").strip():
        raise ValueError("enter the model folder (the one holding HeartMuLa-oss-<version>/)")
    root = studio.check_model_folder(model_path) if studio is not None else Path(model_path).expanduser()
    versions = find_versions(root)
    parts = [f"versions: {', '.join(versions) or 'none'}"]
    for name in ("HeartCodec-oss", "HeartTranscriptor-oss", "tokenizer.json", "gen_config.json"):
        parts.append(f"{name}: {'✓' if (root / name).exists() else '✗ missing'}")
    text = f"`{root}` — " + (" · ".join(parts) if root.is_dir() else "no such folder")
    if root.is_dir() and not versions:
        text += f"  \nDownload the models: `python -m heartmula download --model-path {root}`"
    return {"found": text, "version": gr.update(choices=versions, value=current if current in versions else
                                                 (versions[0] if versions else None))}


def load(studio, model_path, version, device, dtype, lazy_load, codec_device=SAME, quant="none") -> dict:
    """Open the folder with these settings and load the models (replaces the current engine).
    The codec may sit on another card (or the CPU) than the language model."""
    _not_while_busy(studio, "Load")
    if not version:
        raise ValueError("pick a model version (scan the folder first)")
    choices = device_choices()
    for what, value in (("device", device), ("codec device", codec_device)):
        if value not in choices and not (what == "codec device" and value == SAME):
            raise ValueError(f"{what} {value!r} is not available here; available: {', '.join(choices)}")
    if dtype not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {dtype!r}")
    if quant not in QUANT_MODES:
        raise ValueError(f"weights must be one of {', '.join(QUANT_MODES)}, got {quant!r}")
    codec_device = None if codec_device in (SAME, None) else codec_device
    model_path = str(studio.check_model_folder(model_path))
    found = find_versions(model_path)
    if version not in found:  # a version is a folder name: only the ones a scan lists
        raise ValueError(f"no version {version!r} in {model_path}; found: {', '.join(found) or 'none'}")
    c = studio.engine.config
    same = (model_path, version, device, codec_device, dtype, bool(lazy_load), quant) == (
        str(Path(c.model_path).expanduser().resolve()), c.version, c.device, c.codec_device, c.dtype, c.lazy_load,
        c.quant)
    if same:
        if not lazy_load:  # lazy load loads each model for its phase: nothing to load now
            studio.engine.load(codec=studio.engine.paths.codec.is_dir())
    else:
        engine = load_engine(model_path, version=version, device=device, codec_device=codec_device, dtype=dtype,
                             lazy_load=bool(lazy_load), quant=quant, preload=False)
        studio.replace_engine(engine)
        if not lazy_load:
            engine.load(codec=engine.paths.codec.is_dir())
        studio.demo = studio.demo and version == "demo"
    info("Model loaded")
    return {"engine_status": engine_status(studio), "quant_note": ""}


def _not_while_busy(studio, button: str) -> None:
    # Both free the model a song is being made on: the engine would wait for the song, and
    # the page with it.
    if studio.engine.busy:
        raise ValueError(f"a song is being made on the model; stop it or let it finish, then press {button}")


def unload(studio) -> dict:
    _not_while_busy(studio, "Unload")
    studio.engine.unload()
    studio.unload_transcriber()
    info("Models unloaded; they load again on the next job")
    return {"engine_status": engine_status(studio)}


def doctor(studio) -> dict:
    with studio.turns.take("the doctor's checks") as turn:
        turn.wait()  # its matmul check uses the device: not beside a song
        c = studio.engine.config
        return {"doctor": run_doctor(c.model_path, matmul=True, version=c.version).text()}


def weights_changed(studio, quant: str) -> dict:
    """The weights choice moved by hand: whether a Load is needed to apply it."""
    return {"quant_note": weights_note(studio, quant)}


# ----- presets --------------------------------------------------------------------------------
def preset_values(name: str | None) -> dict:
    """A preset's values for the sliders (keys: field names), plus its description."""
    presets, _ = load_presets()
    if name not in presets:
        raise ValueError(f"no preset named {name!r}")
    p = presets[name]
    part = {GenerateOptions: p.generate, TranscribeOptions: p.transcribe}
    values = {k: shown_value(cls, k, getattr(part[cls], k)) for k, cls in SETTINGS_FIELDS.items()}
    # A new preset saved from here starts with no description: the selected one's is only a hint.
    values["description"] = gr.update(value="", placeholder=p.description or "what this preset is for")
    values["delete_btn"] = gr.update(interactive=not p.builtin)
    # Saving selects the new preset, which runs this right after save(): the note must
    # still say where the file is, or it would replace the "saved to" note at once.
    path = preset_user_dir() / f"{name}.yaml"
    values["preset_note"] = ("built-in (read only: save under a new name)" if p.builtin else
                             f"custom preset, saved to `{path}`" if path.is_file() else "custom preset")
    return values


def preset_from_values(name: str, description: str, values: dict) -> Preset:
    """A Preset from the Settings controls' values (keys: option names, shown units); the
    options classes check them."""
    name = (name or "").strip()
    if not name:
        raise ValueError("give the new preset a name")
    by_cls = {cls: {k: v for k, v in values.items() if SETTINGS_FIELDS[k] is cls}
              for cls in (GenerateOptions, TranscribeOptions)}
    return Preset(name=name, generate=from_shown_values(GenerateOptions, by_cls[GenerateOptions]),
                  transcribe=from_shown_values(TranscribeOptions, by_cls[TranscribeOptions]),
                  description=(description or "").strip())


def values_problems(*values) -> dict:
    """The line under Settings' fields (`values`: the PRESET_FIELDS controls): what a run with
    them would refuse, said as it is typed rather than at the next run. Values are never changed."""
    by_cls = {cls: {k: v for k, v in zip(PRESET_FIELDS, values) if SETTINGS_FIELDS[k] is cls}
              for cls in (GenerateOptions, TranscribeOptions)}
    problems = []
    for cls, shown in by_cls.items():
        try:
            from_shown_values(cls, shown)
        except ValueError as e:
            problems.append(str(e))
    return {"values_note": f"⚠️ A run would refuse: {'; '.join(problems)}" if problems else ""}


def save(studio, name, description, *values) -> dict:
    """Save Settings as a preset. `values`: the PRESET_FIELDS controls, then (optionally) the
    weights choice: int8 is kept in the preset (`quant`); "none" leaves it to the loader."""
    quant = values[len(PRESET_FIELDS)] if len(values) > len(PRESET_FIELDS) else None
    preset = replace(preset_from_values(name, description, dict(zip(PRESET_FIELDS, values))),
                     quant="int8" if quant == "int8" else None)
    path = save_preset(preset)
    info(f"Preset {preset.name!r} saved")
    out = dropdowns(preset.name)
    out["preset_note"] = f"saved to `{path}`"
    return out


def delete(studio, name, generate_preset=None, transcribe_preset=None, compare_presets=None) -> dict:
    """Delete a custom preset; every picker that had it selected falls back (Generate to the
    default preset, with a note; Transcribe to none; Compare drops it)."""
    if not name:
        raise ValueError("pick a preset to delete")
    delete_preset(name)
    info(f"Preset {name!r} deleted")
    out = dropdowns(None)
    out["preset_note"] = f"deleted {name!r}"
    names = out["settings_preset"]["choices"]
    out["generate_options"] = [gr.update() for _ in GEN_NAMES]
    if generate_preset not in names:
        fallback = DEFAULT_PRESET if DEFAULT_PRESET in names else names[0]
        out["generate_preset"] = gr.update(choices=names, value=fallback)
        out["generate_preset_info"] = f"Preset {generate_preset!r} was deleted; using **{fallback}**."
        out["generate_options"] = apply_preset(fallback)["options"]  # the picker and the controls agree
    if transcribe_preset is not None and transcribe_preset not in names:
        out["transcribe_preset"] = gr.update(choices=names, value=None)
    out["compare_presets"] = gr.update(choices=names, value=[n for n in compare_presets or [] if n in names])
    return out


def dropdowns(selected: str | None) -> dict:
    """New choices for every preset picker in the studio (Settings, Generate, Compare, Transcribe)."""
    presets, warnings = load_presets()
    names = list(presets)
    if warnings:
        warning("Some presets were skipped: " + "; ".join(warnings))
    pick = selected if selected in names else (DEFAULT_PRESET if DEFAULT_PRESET in names else names[0])
    return {
        "settings_preset": gr.update(choices=names, value=pick),
        "generate_preset": gr.update(choices=names),
        "compare_presets": gr.update(choices=names),
        "transcribe_preset": gr.update(choices=names),
        "preset_problems": preset_problems(warnings),
    }


def _plain(text: str) -> str:
    """One line of text that Markdown shows as written (YAML errors span lines and hold quotes)."""
    text = " ".join(str(text).split())
    return "".join("\\" + c if c in "\\`*_[]<>#|" else c for c in text)


def preset_problems(warnings: list[str]) -> str:
    """The preset files that did not load, each with its file, key and reason, for the page."""
    if not warnings:
        return ""
    lines = "\n".join(f"- {_plain(w)}" for w in warnings)
    return f"**{len(warnings)} preset file(s) skipped** (fix or delete them):\n{lines}"


# ----- live throughput --------------------------------------------------------------------------
def _opt(value, fmt: str, none: str = "–") -> str:
    return none if value is None else fmt.format(value)


def live(studio) -> dict:
    """The readouts the Settings tab's timer refreshes."""
    s = studio.stats.snapshot()
    if s.job:
        job = f"**running: {s.job}**" + (f" · {s.phase}" if s.phase else "") + \
              (f" {s.done}/{s.total}" if s.phase and s.total else "") + \
              f" · {fmt_s(s.elapsed_s)}" + (f" · ETA {fmt_s(s.eta_s)}" if s.eta_s is not None else "")
    else:
        job = f"idle · {s.jobs_done} job(s) done"
    rows = [
        ["Job", job],
        ["Generation", f"{_opt(s.frames_per_s, '{:.2f}')} frames/s · {_opt(s.ms_per_frame, '{:.0f}')} ms/frame"],
        ["Codec real-time factor (lower is faster)", _opt(s.codec_rtf, "{:.3f}")],
        ["Transcription real-time factor (lower is faster)", _opt(s.transcribe_rtf, "{:.3f}")],
    ]
    try:
        memory = studio.engine.memory()
    except Exception as e:  # a device that cannot say is not worth an error every second
        memory = {"?": {"name": f"memory not reported ({e})", "allocated": None, "peak": None, "total": None}}
    for dev, m in memory.items():
        if m.get("total"):
            mem = f"{fmt_bytes(m['allocated'])} used · {fmt_bytes(m['peak'])} peak · {fmt_bytes(m['total'])} total"
        else:
            mem = "not reported (CPU)" if dev.startswith("cpu") else "not reported"
        rows += [[f"Device {dev}", m.get("name", dev)], ["Memory", mem],
                 ["Utilization", device_utilization(dev)]]
    # the engine line too: models load by themselves on a job after an Unload, and free after
    # one under lazy load; "Loaded now" follows within a tick
    return {"live": "\n".join(["| Readout | Now |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]),
            "engine_status": engine_status(studio)}
