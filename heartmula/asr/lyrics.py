"""Lyrics as text: timed segments, LRC/SRT/JSON output, and the lyric check (word error rate).

Nothing here touches a model; transcribe.py produces the `Segment`s, this module writes them
out and compares a transcript with the lyrics the musician intended.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

FORMATS = ("txt", "lrc", "srt", "json")


@dataclass(frozen=True)
class Segment:
    """One timed line of a transcript."""

    start_s: float  # seconds from the start of the audio
    end_s: float  # seconds; >= start_s
    text: str  # stripped of surrounding whitespace


# ---------------------------------------------------------------------------- formats


def _centiseconds(seconds: float) -> int:
    # Round once, in integers, so 59.999 s becomes 01:00.00 and never 00:60.00.
    return max(0, int(round(seconds * 100)))


def lrc_timestamp(seconds: float) -> str:
    """[mm:ss.xx]; minutes grow past 99 rather than wrap."""
    cs = _centiseconds(seconds)
    minutes, cs = divmod(cs, 6000)
    return f"[{minutes:02d}:{cs // 100:02d}.{cs % 100:02d}]"


def srt_timestamp(seconds: float) -> str:
    """HH:MM:SS,mmm."""
    ms = max(0, int(round(seconds * 1000)))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{ms:03d}"


def format_text(segments: Sequence[Segment]) -> str:
    """Plain lyrics: one segment per line."""
    return "".join(f"{s.text}\n" for s in segments if s.text)


def one_line(text: str) -> str:
    """A segment's text on one line: LRC and SRT end a line (an SRT block) at a line break,
    so a "\n", "\r" or blank line inside a segment must not reach the file."""
    return " ".join(text.split())


def format_lrc(segments: Sequence[Segment]) -> str:
    """Synced lyrics. A last, empty line at the final segment's end time tells players
    when the last line stops being sung (LRC has no end times of its own)."""
    sung = [s for s in segments if one_line(s.text)]
    lines = [f"{lrc_timestamp(s.start_s)}{one_line(s.text)}" for s in sung]
    if lines:
        lines.append(lrc_timestamp(max(s.end_s for s in sung)))
    return "".join(f"{line}\n" for line in lines)


def format_srt(segments: Sequence[Segment]) -> str:
    """SubRip subtitles: 1-based index, time range, text, blank line."""
    blocks = []
    for index, s in enumerate((s for s in segments if one_line(s.text)), start=1):
        blocks.append(f"{index}\n{srt_timestamp(s.start_s)} --> {srt_timestamp(s.end_s)}\n{one_line(s.text)}\n")
    return "\n".join(blocks)


def format_json(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


# ---------------------------------------------------------------------------- lyric check

# [verse], [Chorus], [Verse 2], [Outro - fade]: structure markers, never sung. The same
# pattern also drops LRC time tags, so an .lrc file can serve as the intended lyrics.
_TAG = re.compile(r"\[[^\]\n]*\]")
_APOSTROPHES = re.compile(r"['\u2019\u2018`\u00b4]")
_NON_WORD = re.compile(r"[^\w]+")


def normalize_words(text: str) -> list[str]:
    """Lyrics or transcript -> comparable words: no section tags, case or punctuation.

    Apostrophes are removed rather than split on, so "don't" and "dont" match (singers'
    lyric sheets and Whisper disagree on them often); other punctuation separates words.
    """
    text = unicodedata.normalize("NFKC", _TAG.sub(" ", text)).casefold()
    text = _APOSTROPHES.sub("", text)
    return [w for w in _NON_WORD.sub(" ", text).replace("_", " ").split() if w]


@dataclass(frozen=True)
class WordEdit:
    """One step of the word alignment: '=' same, '~' substituted, '-' missing, '+' extra."""

    op: str
    intended: str | None  # the word in the lyrics (None for '+')
    heard: str | None  # the word in the transcript (None for '-')


@dataclass(frozen=True)
class LyricCheck:
    """How closely a transcript matches the intended lyrics."""

    word_error_rate: float  # (substitutions + deletions + insertions) / intended words
    n_intended: int  # words in the intended lyrics, after normalisation
    n_heard: int  # words in the transcript, after normalisation
    hits: int
    substitutions: int
    deletions: int  # intended words not heard
    insertions: int  # heard words not in the lyrics
    edits: tuple[WordEdit, ...]  # the alignment, in lyric order

    def diff(self) -> str:
        """A readable word diff: '= the rain  - is  + was  = falling'. Runs of the same
        operation are grouped; a substitution reads as '- intended  + heard'."""
        parts: list[tuple[str, list[str]]] = []

        def add(op: str, word: str) -> None:
            if parts and parts[-1][0] == op:
                parts[-1][1].append(word)
            else:
                parts.append((op, [word]))

        for e in self.edits:
            if e.op == "=":
                add("=", e.intended)
            elif e.op == "~":
                # Keep a substitution's pair together: close a '+' run so the '-' starts fresh.
                add("-", e.intended)
                add("+", e.heard)
            elif e.op == "-":
                add("-", e.intended)
            else:
                add("+", e.heard)
        return "  ".join(f"{op} {' '.join(words)}" for op, words in parts)


def align_words(intended: Sequence[str], heard: Sequence[str]) -> list[WordEdit]:
    """Levenshtein alignment of two word lists (unit costs), with the edit path.

    Among the alignments with the fewest edits it picks one with the most matching words,
    so a dropped word reads as '- the' instead of a chain of substitutions (both count the
    same towards the word error rate). O(len(intended) · len(heard)): a five-minute song is
    a few hundred words a side, well under a second in pure Python.
    """
    n, m = len(intended), len(heard)
    # One integer per cell orders (edits, -matches): an edit costs big, a match earns 1,
    # and big exceeds any number of matches, so fewer edits always win first.
    big = n + m + 1
    # score[i][j]: best score to turn intended[:i] into heard[:j]
    score = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        score[i][0] = i * big
    for j in range(1, m + 1):
        score[0][j] = j * big

    def diagonal(i: int, j: int) -> int:
        return score[i - 1][j - 1] + (-1 if intended[i - 1] == heard[j - 1] else big)

    for i in range(1, n + 1):
        row, prev = score[i], score[i - 1]
        for j in range(1, m + 1):
            row[j] = min(diagonal(i, j), prev[j] + big, row[j - 1] + big)
    edits: list[WordEdit] = []
    i, j = n, m
    while i > 0 or j > 0:
        # Ties go match/substitution, then deletion, then insertion: the same every time.
        if i > 0 and j > 0 and score[i][j] == diagonal(i, j):
            same = intended[i - 1] == heard[j - 1]
            edits.append(WordEdit("=" if same else "~", intended[i - 1], heard[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and score[i][j] == score[i - 1][j] + big:
            edits.append(WordEdit("-", intended[i - 1], None))
            i -= 1
        else:
            edits.append(WordEdit("+", None, heard[j - 1]))
            j -= 1
    edits.reverse()
    return edits


def check_lyrics(intended: str, transcript: str) -> LyricCheck:
    """Compare the lyrics a musician wrote with what was heard (word error rate + diff)."""
    ref, hyp = normalize_words(intended), normalize_words(transcript)
    if not ref:
        raise ValueError(
            "the intended lyrics contain no words once [section] tags and punctuation are removed; "
            "pass the lyric text (or a file holding it) to compare against"
        )
    edits = align_words(ref, hyp)
    count = {op: sum(e.op == op for e in edits) for op in "=~-+"}
    errors = count["~"] + count["-"] + count["+"]
    return LyricCheck(
        word_error_rate=errors / len(ref),
        n_intended=len(ref),
        n_heard=len(hyp),
        hits=count["="],
        substitutions=count["~"],
        deletions=count["-"],
        insertions=count["+"],
        edits=tuple(edits),
    )


def join_segments(segments: Iterable[Segment]) -> str:
    """The transcript as one string (segments separated by spaces)."""
    return " ".join(s.text for s in segments if s.text)
