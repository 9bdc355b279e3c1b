"""Presets: YAML files of option values, `presets/<name>.yaml`, the file name being the name.

A preset is partial: keys it leaves out keep their defaults. Keys are field names of
`GenerateOptions` (generation) and `TranscribeOptions` (transcription) that their
declarations allow in presets (heartmula/options.py), and `quant` (the language model's
weights, a load-time choice: `python -m heartmula generate --preset` loads with it unless
`--quant` says otherwise; a preset without it leaves the choice to the loader). As nanoGPT's
configurator does, an unknown key or a value of another type is refused with a message
that names the file, the key and the fix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..audio import atomic_write_bytes
from ..asr.transcribe import TranscribeOptions
from ..mula.generate import GenerateOptions
from ..mula.quant import QUANT_MODES
from ..options import options_of

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "presets"  # the repository's presets/
DEFAULT_PRESET = "balanced"  # the studio's first choice and the fallback when a preset is gone
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\- ]{0,47}$")


@dataclass(frozen=True)
class Preset:
    name: str
    generate: GenerateOptions
    transcribe: TranscribeOptions
    description: str = ""
    builtin: bool = False
    quant: str | None = None  # "none" or "int8" weights when loading for this preset; None: the loader's choice

    def to_dict(self) -> dict:
        return {"description": self.description, **{k: getattr(self.generate, k) for k in preset_keys(GenerateOptions)},
                **{k: getattr(self.transcribe, k) for k in preset_keys(TranscribeOptions)},
                **({"quant": self.quant} if self.quant is not None else {})}


def preset_keys(cls) -> list[str]:
    """The option names a preset may set for `cls`, in declaration order."""
    return [name for name, opt in options_of(cls).items() if opt.in_presets]


def _coerce(key: str, value, kind: type, where: str):
    """Keep the option's declared type: int options take ints, float options ints or floats."""
    if isinstance(value, bool) != (kind is bool):
        raise ValueError(f"{where}: {key} must be {kind.__name__}, got {value!r}")
    if kind is float and isinstance(value, int):
        return float(value)
    if value is not None and not isinstance(value, kind):
        raise ValueError(f"{where}: {key} must be {kind.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _description(value, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError(f"{where}: description must be text, got {type(value).__name__}")
    return str(value)


def _check_name(name) -> str:
    """A preset name is a plain file stem: never a path (no '/', '..' or leading dot)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"preset name {name!r}: use 1-48 letters, digits, spaces, '-' or '_', starting with a letter or digit"
        )
    return name


def preset_from_dict(name: str, data: dict, where: str, builtin: bool = False) -> Preset:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a preset is a mapping of option: value, found {type(data).__name__}")
    gen_defaults, tr_defaults = GenerateOptions(), TranscribeOptions()
    gen_keys, tr_keys = set(preset_keys(GenerateOptions)), set(preset_keys(TranscribeOptions))
    unknown = sorted(str(k) for k in set(data) - gen_keys - tr_keys - {"description", "quant"})  # YAML keys may be numbers
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: description, "
            f"{', '.join(sorted(gen_keys | tr_keys | {'quant'}))}"
        )
    quant = data.get("quant")
    if quant is not None and quant not in QUANT_MODES:
        raise ValueError(f"{where}: quant={quant!r} is not allowed; allowed: {', '.join(QUANT_MODES)}")
    kinds = {**{k: o.kind for k, o in options_of(GenerateOptions).items()},
             **{k: o.kind for k, o in options_of(TranscribeOptions).items()}}
    gen = {k: _coerce(k, v, kinds[k], where) for k, v in data.items() if k in gen_keys}
    tr = {k: _coerce(k, v, kinds[k], where) for k, v in data.items() if k in tr_keys}
    try:
        return Preset(
            name=name,
            generate=replace(gen_defaults, **gen),
            transcribe=replace(tr_defaults, **tr),
            description=_description(data.get("description", ""), where),
            builtin=builtin,
            quant=quant,
        )
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)  # safe_load: YAML never builds Python objects here
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: could not be read ({e})") from e
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    return data if data is not None else {}


def user_dir() -> Path:
    """Where presets saved from the studio go (built-in ones are never overwritten)."""
    base = os.environ.get("HEARTMULA_HOME") or Path.home() / ".local" / "share" / "heartmula"
    return Path(base) / "presets"


def load_preset(name_or_path: str | Path, search: list[Path] | None = None) -> Preset:
    """A preset by name (user presets shadow nothing: built-ins win) or by YAML path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return preset_from_dict(p.stem, _read_yaml(p), str(p))
    if not isinstance(name_or_path, str) or not NAME_RE.match(name_or_path):  # never a path by another name
        raise ValueError(f"no preset named {str(name_or_path)!r}; give a preset name or a .yaml file")
    for folder in search or [BUILTIN_DIR, user_dir()]:
        path = Path(folder) / f"{name_or_path}.yaml"
        if path.is_file():
            return preset_from_dict(path.stem, _read_yaml(path), str(path), builtin=Path(folder) == BUILTIN_DIR)
    raise ValueError(f"no preset named {name_or_path!r}; available: {', '.join(list_presets(search)) or 'none'}")


def list_presets(search: list[Path] | None = None) -> list[str]:
    names: list[str] = []
    for folder in search or [BUILTIN_DIR, user_dir()]:
        for path in sorted(Path(folder).glob("*.yaml")):
            if path.stem not in names:
                names.append(path.stem)
    return names


def load_all(search: list[Path] | None = None) -> tuple[dict[str, Preset], list[str]]:
    """Every preset that loads, and one warning per file that does not (skipped, not fatal)."""
    presets, warnings = {}, []
    for name in list_presets(search):
        try:
            presets[name] = load_preset(name, search)
        except ValueError as e:
            warnings.append(str(e))
    return presets, warnings


def save_preset(preset: Preset, folder: Path | None = None) -> Path:
    """Write a preset as YAML, atomically; refuses names of built-in presets."""
    import yaml

    _check_name(preset.name)
    if (BUILTIN_DIR / f"{preset.name}.yaml").exists():
        raise ValueError(f"{preset.name!r} is a built-in preset; save under another name")
    folder = Path(folder or user_dir())
    data = preset.to_dict()
    preset_from_dict(preset.name, data, "new preset")  # the file we write must load back
    try:
        return atomic_write_bytes(folder / f"{preset.name}.yaml",
                                  yaml.safe_dump(data, sort_keys=False).encode("utf-8"))
    except OSError as e:
        raise RuntimeError(f"could not save preset {preset.name!r} in {folder}: {e.strerror or e}") from e


def delete_preset(name: str, folder: Path | None = None) -> None:
    _check_name(name)  # a name from the UI must not reach files outside the presets folder
    if (BUILTIN_DIR / f"{name}.yaml").exists():
        raise ValueError(f"{name!r} is a built-in preset and cannot be deleted")
    path = Path(folder or user_dir()) / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no custom preset named {name!r}")
    path.unlink()
