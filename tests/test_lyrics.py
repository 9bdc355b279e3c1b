"""LRC/SRT/text output and the lyric check (normalisation, WER, word diff). No model needed."""

from __future__ import annotations

import json
import re

import pytest

from heartmula.asr.lyrics import (Segment, align_words, check_lyrics, format_json, format_lrc, format_srt,
                              format_text, lrc_timestamp, normalize_words, srt_timestamp)

SEGMENTS = (
    Segment(0.0, 2.5, "The rain is falling"),
    Segment(3.004, 61.999, "on the silver town"),
    Segment(3725.5, 3727.25, "an hour later"),
)

LRC_LINE = re.compile(r"^\[(\d{2,}):([0-5]\d)\.(\d{2})\](.*)$")
SRT_TIME = re.compile(r"^(\d{2}):([0-5]\d):([0-5]\d),(\d{3}) --> (\d{2}):([0-5]\d):([0-5]\d),(\d{3})$")


def _lrc_seconds(m):
    return int(m.group(1)) * 60 + int(m.group(2)) + int(m.group(3)) / 100


def _srt_seconds(h, mi, s, ms):
    return int(h) * 3600 + int(mi) * 60 + int(s) + int(ms) / 1000


def test_timestamps_round_without_overflow():
    assert lrc_timestamp(59.999) == "[01:00.00]"
    assert lrc_timestamp(61.234) == "[01:01.23]"
    assert lrc_timestamp(6000.0) == "[100:00.00]"  # minutes grow, never wrap
    assert srt_timestamp(3599.9996) == "01:00:00,000"
    assert srt_timestamp(3725.5) == "01:02:05,500"
    assert srt_timestamp(-0.1) == "00:00:00,000"


def test_lrc_syntax_and_order():
    text = format_lrc(SEGMENTS)
    lines = text.splitlines()
    assert len(lines) == len(SEGMENTS) + 1  # plus the closing time tag
    matches = [LRC_LINE.match(line) for line in lines]
    assert all(matches), lines
    times = [_lrc_seconds(m) for m in matches]
    assert times == sorted(times)
    assert [m.group(4) for m in matches[:-1]] == [s.text for s in SEGMENTS]
    assert matches[-1].group(4) == "" and times[-1] == pytest.approx(3727.25)
    assert lines[1] == "[00:03.00]on the silver town"


def test_srt_syntax_and_order():
    blocks = format_srt(SEGMENTS).strip("\n").split("\n\n")
    assert len(blocks) == len(SEGMENTS)
    previous_end = 0.0
    for index, (block, seg) in enumerate(zip(blocks, SEGMENTS), start=1):
        number, times, text = block.split("\n")
        assert number == str(index)
        m = SRT_TIME.match(times)
        assert m, times
        start, end = _srt_seconds(*m.groups()[:4]), _srt_seconds(*m.groups()[4:])
        assert previous_end <= start <= end
        assert start == pytest.approx(seg.start_s, abs=5e-4) and end == pytest.approx(seg.end_s, abs=5e-4)
        assert text == seg.text
        previous_end = end
    assert "00:00:03,004 --> 00:01:01,999" in blocks[1]


def test_empty_segments_are_skipped_and_empty_input_gives_empty_output():
    segs = (Segment(0, 1, "one"), Segment(1, 2, ""), Segment(2, 3, "three"))
    assert format_text(segs) == "one\nthree\n"
    assert format_srt(segs).startswith("1\n") and "\n2\n" in format_srt(segs) and "\n3\n" not in format_srt(segs)
    assert format_lrc(()) == "" and format_srt(()) == "" and format_text(()) == ""


def test_json_round_trips_unicode():
    data = {"text": "café ♪", "segments": [{"start_s": 0.0, "end_s": 1.0, "text": "café ♪"}]}
    out = format_json(data)
    assert "café ♪" in out and json.loads(out) == data


def test_normalize_drops_section_tags_case_and_punctuation():
    lyrics = "[Verse 1]\nThe RAIN, it's falling!\n[chorus]\n(Oh-oh) \u201cSilver\u201d town\u2026 don\u2019t go"
    assert normalize_words(lyrics) == ["the", "rain", "its", "falling", "oh", "oh", "silver", "town", "dont", "go"]
    assert normalize_words("[00:12.34]Timed line") == ["timed", "line"]
    assert normalize_words("[verse] [Chorus] ...") == []


def test_wer_counts_and_diff():
    check = check_lyrics("[verse]\nThe rain is falling on the town", "the rain was falling on town tonight")
    assert (check.n_intended, check.n_heard) == (7, 7)
    assert (check.hits, check.substitutions, check.deletions, check.insertions) == (5, 1, 1, 1)
    assert check.word_error_rate == pytest.approx(3 / 7)
    assert check.diff() == "= the rain  - is  + was  = falling on  - the  = town  + tonight"


def test_wer_perfect_and_ignores_formatting():
    check = check_lyrics("[Chorus]\nHold my hand,\nuntil the MORNING light!", " hold my hand until the morning light.")
    assert check.word_error_rate == 0.0 and check.hits == 7
    assert check.diff() == "= hold my hand until the morning light"


def test_wer_can_exceed_one_and_empty_transcript_is_all_deletions():
    assert check_lyrics("la la", "na na na na na").word_error_rate == pytest.approx(5 / 2)
    empty = check_lyrics("one two three", "")
    assert empty.word_error_rate == 1.0 and empty.deletions == 3
    assert empty.diff() == "- one two three"


def test_intended_lyrics_without_words_are_rejected():
    with pytest.raises(ValueError, match="no words"):
        check_lyrics("[verse]\n[chorus]\n...", "anything")


def test_alignment_is_minimal():
    # Levenshtein distance of a known pair: kitten -> sitting as words of letters.
    edits = align_words(list("kitten"), list("sitting"))
    assert sum(e.op != "=" for e in edits) == 3
    assert [e.intended for e in edits if e.intended] == list("kitten")
    assert [e.heard for e in edits if e.heard] == list("sitting")


def _levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j - 1] + (x != y), prev[j] + 1, cur[j - 1] + 1))
        prev = cur
    return prev[-1]


def test_alignment_edit_count_equals_levenshtein_distance_on_random_lists():
    import random

    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 9))]
        edits = align_words(a, b)
        assert sum(e.op != "=" for e in edits) == _levenshtein(a, b)
        assert [e.intended for e in edits if e.op != "+"] == a
        assert [e.heard for e in edits if e.op != "-"] == b
