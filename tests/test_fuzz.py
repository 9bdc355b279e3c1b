"""Property tests (hypothesis) for the parsers and writers that take user input: the prompt
builder, the preset loader (dicts and YAML files) and the LRC/SRT writers.

Each property says what must hold for every input: a valid result, or a ValueError whose
message is for the user; never another exception, never a malformed file.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, fields

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from heartmula.engine import MAX_LYRICS_CHARS, MAX_TAGS_CHARS, Engine, EngineConfig
from heartmula.mula.generate import GenerateOptions
from heartmula.asr.lyrics import Segment, format_lrc, format_srt
from heartmula.asr.transcribe import TranscribeOptions
from heartmula.library.presets import Preset, load_preset, preset_from_dict
from heartmula.mula.prompt import build_prompt
from heartmula.asr.lyrics import one_line

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def prompt_engine(tiny_ckpt):
    # Opening an engine reads only the tokenizer and configs; models load on first generation.
    return Engine(EngineConfig(model_path=str(tiny_ckpt), version="tiny", device="cpu"))


# ----- prompt builder --------------------------------------------------------------------------
text = st.text(st.characters(codec="utf-8"), max_size=300) | st.text(max_size=300)  # incl. controls, surrogates


@FUZZ
@given(lyrics=text, tags=text)
def test_build_prompt_is_well_formed_for_any_text(prompt_engine, lyrics, tags):
    gen = prompt_engine.gen
    try:
        prompt = prompt_engine.build_prompt(lyrics, tags)
    except ValueError as e:  # empty after cleaning, or tags without a word: the message names the field
        assert re.search(r"(lyrics|tags) are empty", str(e)) or (
            str(e).startswith("tags hold no words") and not any(ch.isalnum() for ch in tags)), e
        return
    tokens, mask = prompt.tokens, prompt.mask
    assert tokens.ndim == 2 and tokens.shape[1] == 9 and tokens.shape == mask.shape
    col = tokens[:, -1]
    # [bos tags eos] [muq slot] [bos lyrics eos]: the text column alone, nothing in the audio columns
    assert col[0] == gen.text_bos_id and col[prompt.muq_idx - 1] == gen.text_eos_id
    assert col[prompt.muq_idx] == gen.empty_id and col[prompt.muq_idx + 1] == gen.text_bos_id
    assert col[-1] == gen.text_eos_id
    assert (tokens[:, :-1] == gen.empty_id).all() and mask[:, -1].all() and not mask[:, :-1].any()
    vocab = prompt_engine.tokenizer.get_vocab_size()
    assert (col >= 0).all() and (col < max(vocab, gen.text_eos_id + 1)).all()


@FUZZ
@given(lyrics=st.text(max_size=50), n=st.integers(0, 3))
def test_prompt_cleaning_drops_control_characters(prompt_engine, lyrics, n):
    assume(lyrics.strip() and all(ch in "\n\t" or ch.isprintable() for ch in lyrics))
    dirty = "\x00\x1b\x07" * n + lyrics + "\u200b\x7f" * n
    clean = prompt_engine.build_prompt(lyrics, "pop")
    assert (prompt_engine.build_prompt(dirty, "pop").tokens == clean.tokens).all()


@settings(max_examples=20, deadline=None)
@given(extra=st.integers(1, 5000))
def test_over_long_prompts_name_the_limit(prompt_engine, extra):
    with pytest.raises(ValueError, match=f"the limit is {MAX_LYRICS_CHARS}"):
        prompt_engine.build_prompt("a" * (MAX_LYRICS_CHARS + extra), "pop")
    with pytest.raises(ValueError, match=f"the limit is {MAX_TAGS_CHARS}"):
        prompt_engine.build_prompt("la", "b" * (MAX_TAGS_CHARS + extra))


def test_build_prompt_function_directly(prompt_engine):
    """Rows: the tags' ids (bos ... eos), the empty reference-audio row, the lyrics' ids (bos ... eos)."""
    tok, gen = prompt_engine.tokenizer, prompt_engine.gen
    p = build_prompt(tok, "Hello", "Pop", gen)
    text = p.tokens[:, -1].tolist()
    tags, lyrics = text[: p.muq_idx], text[p.muq_idx + 1:]
    assert tags[0] == lyrics[0] == gen.text_bos_id and tags[-1] == lyrics[-1] == gen.text_eos_id
    assert tok.decode(tags, skip_special_tokens=True) == "<tag>pop</tag>"
    assert tok.decode(lyrics, skip_special_tokens=True) == "hello"
    assert text[p.muq_idx] == gen.empty_id and not p.tokens[:, :-1].any() and p.mask[:, -1].all()


# ----- presets ---------------------------------------------------------------------------------
GEN_KEYS = [f.name for f in fields(GenerateOptions)]
TR_KEYS = [f.name for f in fields(TranscribeOptions)]
scalars = (st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True)
           | st.text(max_size=20))
values = scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=5), scalars, max_size=2)
keys = st.sampled_from(GEN_KEYS + TR_KEYS + ["description"]) | st.text(max_size=12) | st.integers(-5, 5)


def _valid(preset: Preset) -> None:
    GenerateOptions(**asdict(preset.generate))  # re-checks every range
    TranscribeOptions(**asdict(preset.transcribe))
    assert isinstance(preset.description, str)


@FUZZ
@given(data=st.dictionaries(keys, values, max_size=6))
def test_preset_from_any_mapping_is_valid_or_refused(data):
    try:
        preset = preset_from_dict("fuzz", data, "fuzz.yaml")
    except ValueError as e:
        assert str(e).startswith("fuzz.yaml: "), e  # the file is named for the user
        return
    _valid(preset)


good_values = st.fixed_dictionaries({}, optional={
    "max_audio_length_ms": st.integers(80, 600_000),
    "cfg_scale": st.floats(1.0, 10.0),
    "temperature": st.floats(0.05, 5.0),
    "topk": st.integers(1, 8192),
    "takes": st.integers(1, 8),
    "seed": st.none() | st.integers(0, 2**63 - 1),
    "ignore_eos": st.booleans(),
    "codec_steps": st.integers(1, 100),
    "codec_guidance_scale": st.floats(1.0, 10.0),
    "batch_size": st.integers(1, 64),
    "chunk_length_s": st.floats(5, 30),
    "description": st.text(max_size=40),
})


@FUZZ
@given(data=good_values)
def test_valid_presets_round_trip_through_yaml(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("presets") / "round.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    preset = load_preset(path)
    _valid(preset)
    for key, value in data.items():
        if key == "description":
            assert preset.description == value
        else:
            got = getattr(preset.generate if key in GEN_KEYS else preset.transcribe, key)
            assert got == value or (isinstance(value, float) and math.isclose(got, value))


@FUZZ
@given(blob=st.binary(max_size=200) | st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_any_file_content_loads_or_is_refused(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("presets") / "blob.yaml"
    path.write_bytes(blob)
    try:
        preset = load_preset(path)
    except ValueError as e:
        assert str(path) in str(e)
        return
    _valid(preset)


# ----- LRC / SRT -------------------------------------------------------------------------------
LRC_LINE = re.compile(r"^\[(\d{2,}):([0-5]\d)\.(\d{2})\](.*)$")
SRT_TIME = re.compile(r"^(\d{2,}):([0-5]\d):([0-5]\d),(\d{3}) --> (\d{2,}):([0-5]\d):([0-5]\d),(\d{3})$")
any_line = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
line_text = any_line.map(one_line)  # as transcribe.py hands segments on


@st.composite
def transcripts(draw, text=line_text):
    """Segments as transcribe.py makes them: in time order, start <= end, one-line text."""
    n = draw(st.integers(0, 12))
    t, segments = 0.0, []
    for _ in range(n):
        t += draw(st.floats(0, 400, allow_nan=False))
        end = t + draw(st.floats(0, 60, allow_nan=False))
        segments.append(Segment(start_s=round(t, 3), end_s=round(end, 3), text=draw(text)))
    return segments


def _lrc_seconds(m) -> float:
    return int(m.group(1)) * 60 + int(m.group(2)) + int(m.group(3)) / 100


def _srt_seconds(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


@FUZZ
@given(segments=transcripts())
def test_lrc_parses_with_monotonic_timestamps(segments):
    out = format_lrc(segments)
    lines = out.splitlines()
    spoken = [s for s in segments if one_line(s.text)]  # blank lines are not sung
    assert len(lines) == (len(spoken) + 1 if spoken else 0)  # one per line, then the end mark
    times = []
    for line, seg in zip(lines, spoken + [None]):
        m = LRC_LINE.match(line)
        assert m, f"not an LRC line: {line!r}"
        times.append(_lrc_seconds(m))
        if seg is not None:
            assert m.group(4) == one_line(seg.text)
            assert abs(times[-1] - seg.start_s) <= 0.005 + 1e-9
    assert times == sorted(times)


@FUZZ
@given(segments=transcripts())
def test_srt_parses_with_monotonic_timestamps(segments):
    out = format_srt(segments)
    spoken = [s for s in segments if one_line(s.text)]
    blocks = [b for b in out.split("\n\n") if b.strip()]
    assert len(blocks) == len(spoken)
    last_start = 0.0
    for i, (block, seg) in enumerate(zip(blocks, spoken), start=1):
        index, times, *body = block.strip("\n").split("\n")
        assert index == str(i)
        m = SRT_TIME.match(times)
        assert m, f"not an SRT time line: {times!r}"
        start, end = _srt_seconds(*m.groups()[:4]), _srt_seconds(*m.groups()[4:])
        assert last_start <= start <= end and abs(start - seg.start_s) <= 0.0005 + 1e-9
        assert "\n".join(body) == one_line(seg.text)
        last_start = start


@settings(max_examples=50, deadline=None)
@given(segments=transcripts(text=any_line))
def test_writers_flatten_line_breaks_themselves(segments):
    test_lrc_parses_with_monotonic_timestamps.hypothesis.inner_test(segments)
    test_srt_parses_with_monotonic_timestamps.hypothesis.inner_test(segments)
