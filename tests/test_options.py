"""Options are declared once (heartmula/options.py): checks, units and parsing here, and a
field added to a copy of GenerateOptions that reaches the studio, the CLI, presets and the
API with no other edit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from heartmula import GenerateOptions, TranscribeOptions, from_shown_values, options_of
from heartmula.options import parse_number, shown_name

ROOT = Path(__file__).resolve().parents[1]


def test_every_option_is_declared_with_label_help_and_range():
    for cls in (GenerateOptions, TranscribeOptions):
        for name, opt in options_of(cls).items():
            assert opt.label and opt.help, name
            if opt.kind in (int, float):
                assert opt.lo is not None and opt.hi is not None and opt.step, name
                default = getattr(cls(), name)
                assert (default is None and opt.nullable) or opt.lo <= default <= opt.hi, name


def test_length_is_stored_in_ms_and_shown_in_seconds():
    opt = options_of(GenerateOptions)["max_audio_length_ms"]
    assert shown_name("max_audio_length_ms", opt) == "max_audio_length_s"
    assert from_shown_values(GenerateOptions, {"max_audio_length_ms": 0.5}).max_audio_length_ms == 500
    assert from_shown_values(GenerateOptions, {"max_audio_length_ms": "1.6"}).max_audio_length_ms == 1600
    with pytest.raises(ValueError, match=r"max_audio_length_s=0.01 is out of range; allowed: 0.08 to 600 s"):
        from_shown_values(GenerateOptions, {"max_audio_length_ms": 0.01})


@pytest.mark.parametrize("value,want", [
    ("123456789012345678", 123456789012345678), (123456789012345678, 123456789012345678),
    ("9223372036854775807", 2**63 - 1), (" 7 ", 7), (7.0, 7), ("", None), (None, None),
])
def test_seeds_stay_exact_integers(value, want):
    assert from_shown_values(GenerateOptions, {"seed": value}).seed == want


@pytest.mark.parametrize("name,value,message", [
    ("seed", "9223372036854775808", "seed=9223372036854775808 is out of range"),
    ("seed", "1.5", "seed must be a whole number"),
    ("seed", "nan", "seed must be a finite number"),
    ("seed", "abc", "seed must be a number, got 'abc'"),
    ("topk", 8193, "topk=8193 is out of range; allowed: 1 to 8192"),
    ("topk", True, "topk must be a number"),
    ("cfg_scale", "", "cfg_scale is empty"),
    ("cfg_scale", [1], "cfg_scale must be a number"),
    ("ignore_eos", "yes", "ignore_eos must be true or false"),
])
def test_bad_values_name_the_option_and_the_range(name, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        from_shown_values(GenerateOptions, {name: value})


def test_parse_number_keeps_float_options_float():
    opt = options_of(GenerateOptions)["cfg_scale"]
    assert parse_number("cfg_scale", opt, 2) == 2.0 and isinstance(parse_number("cfg_scale", opt, 2), float)


ADD_FIELD = '''
    fade_out_s: float = option(0.0, "Fade out", "seconds of fade at the end of the song", lo=0.0, hi=10.0,
                               step=0.5, unit="s", advanced=True)
'''

PROBE = r"""
import json, subprocess, sys
from heartmula import load_engine, GenerateOptions
from heartmula.__main__ import main
from heartmula.library.presets import preset_from_dict
from ui.blocks import build_ui
from ui.handlers import generate as gen_h, settings as set_h

out = {}
engine = load_engine(sys.argv[1], version="tiny", device="cpu", preload=False)
blocks = build_ui(engine, output_dir=sys.argv[2])
ids = [c.get("props", {}).get("elem_id") for c in blocks.get_config_file()["components"]]
out["gen_control"] = "gen-fade_out_s" in ids
out["settings_control"] = "set-fade_out_s" in ids
api = blocks.get_api_info()["named_endpoints"]["/generate"]["parameters"]
out["api"] = [p["parameter_name"] for p in api]
out["handler"] = gen_h.build_options(None, *[2.5 if n == "fade_out_s" else None if n == "seed" else
                                             getattr(GenerateOptions(), n) if n != "max_audio_length_ms" else 3
                                             for n in gen_h.GEN_NAMES]).fade_out_s
out["settings_field"] = "fade_out_s" in set_h.PRESET_FIELDS
out["preset"] = preset_from_dict("x", {"fade_out_s": 2.5}, "x.yaml").generate.fade_out_s
try:
    preset_from_dict("x", {"fade_out_s": 99}, "x.yaml")
    out["preset_refuses"] = None
except ValueError as e:
    out["preset_refuses"] = str(e)
help_text = subprocess.run([sys.executable, "-m", "heartmula", "generate", "--help"], capture_output=True, text=True).stdout
out["cli_flag"] = "--fade-out-s" in help_text and "seconds of fade" in help_text
print(json.dumps(out))
"""


def test_a_new_option_reaches_studio_cli_presets_and_api_with_no_other_edit(tmp_path, tiny_ckpt):
    copy = tmp_path / "repo"
    for part in ("heartmula", "ui", "presets"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    source = copy / "heartmula" / "mula" / "generate.py"
    text = source.read_text()
    anchor = "    def __post_init__(self):\n        check_options(self)\n"
    assert text.count(anchor) == 1  # GenerateOptions' own check
    source.write_text(text.replace(anchor, ADD_FIELD.lstrip("\n") + "\n" + anchor))
    p = subprocess.run([sys.executable, "-c", PROBE, str(tiny_ckpt), str(tmp_path / "out")], cwd=copy,
                       capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin",
                                                                         "HOME": str(tmp_path)})
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["gen_control"] and got["settings_control"] and got["settings_field"], got
    assert "fade_out_s" in got["api"], got
    assert got["handler"] == 2.5 and got["preset"] == 2.5, got
    assert got["preset_refuses"] and "fade_out_s=99.0 is out of range; allowed: 0.0 to 10.0 s" in got["preset_refuses"]
    assert got["cli_flag"], got


@pytest.mark.parametrize("name,value,message", [
    ("max_audio_length_ms", -5, "Maximum length: max_audio_length_s=-5 is out of range; allowed: 0.08 to 600 s"),
    ("max_audio_length_ms", "0", "Maximum length: max_audio_length_s=0 is out of range; allowed: 0.08 to 600 s"),
    ("max_audio_length_ms", "abc", "Maximum length: max_audio_length_s must be a number, got 'abc'"),
    ("max_audio_length_ms", None, "Maximum length: max_audio_length_s is empty; enter a number (0.08 to 600 s)"),
    ("takes", 100, "Takes: takes=100 is out of range; allowed: 1 to 8"),
    ("takes", 2.5, "Takes: takes must be a whole number, got 2.5"),
    ("topk", 1e9, "Top-k: topk=1000000000 is out of range; allowed: 1 to 8192"),
])
def test_a_form_value_is_refused_in_the_words_of_its_control(name, value, message):
    """What the studio shows: the control's label as the page shows it, the option's name (the
    API's and the CLI's), the value as sent and the declared range with its unit."""
    with pytest.raises(ValueError) as e:
        from_shown_values(GenerateOptions, {name: value})
    assert str(e.value) == message


def test_every_bad_value_of_a_form_is_named_at_once():
    """Tester: Temperature 700 and Takes -5 gave only the Temperature refusal; fixed, the next run
    gave the Takes one. All of them come in one message, in the form's order."""
    from heartmula import GenerateOptions, from_shown_values

    with pytest.raises(ValueError) as caught:
        from_shown_values(GenerateOptions, {"temperature": 700, "takes": -5, "topk": 50, "cfg_scale": "x"})
    message = str(caught.value)
    assert message.index("Temperature: temperature=700") < message.index("Takes: takes=-5")
    assert "Guidance" in message or "cfg_scale" in message, message
    assert "Top-k" not in message  # a good value is not named
    with pytest.raises(ValueError, match=r"^Takes: takes=0 is out of range; allowed: 1 to 8$"):
        from_shown_values(GenerateOptions, {"takes": 0})  # one bad value: the message as before
