"""Lyrics and tags -> the prompt's token rows, exactly as the official pipeline builds them.

A row has n_codebooks + 1 columns: the audio codes, then one text id. The prompt uses
the text column only: the tag ids, one empty row (the slot for a reference-audio
embedding), then the lyric ids; tags and lyrics each start with bos and end with eos.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class GenConfig:
    """gen_config.json of the checkpoint folder."""

    text_bos_id: int = 128000
    text_eos_id: int = 128001
    audio_eos_id: int = 8193
    empty_id: int = 0

    @classmethod
    def from_file(cls, path: str | Path) -> "GenConfig":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}")
        return cls(**{k: int(v) for k, v in data.items()})


@dataclass(frozen=True)
class Prompt:
    tokens: np.ndarray  # [L, n_codebooks + 1] int64
    mask: np.ndarray  # [L, n_codebooks + 1] bool
    muq_idx: int  # row of the reference-audio slot

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _ids(tokenizer, text: str, gen: GenConfig) -> list[int]:
    ids = tokenizer.encode(text).ids
    if not ids or ids[0] != gen.text_bos_id:
        ids = [gen.text_bos_id] + ids
    if ids[-1] != gen.text_eos_id:
        ids = ids + [gen.text_eos_id]
    return ids


def normalize_tags(tags: str) -> str:
    """Lower-case and wrap in <tag>...</tag> (as the models were trained)."""
    tags = tags.strip().lower()
    if not tags.startswith("<tag>"):
        tags = f"<tag>{tags}"
    if not tags.endswith("</tag>"):
        tags = f"{tags}</tag>"
    return tags


def build_prompt(tokenizer, lyrics: str, tags: str, gen: GenConfig, n_codebooks: int = 8) -> Prompt:
    """Token rows for one song. `tokenizer` is a `tokenizers.Tokenizer`."""
    tag_ids = _ids(tokenizer, normalize_tags(tags), gen)
    lyric_ids = _ids(tokenizer, lyrics.lower(), gen)
    n = len(tag_ids) + 1 + len(lyric_ids)
    tokens = np.full((n, n_codebooks + 1), gen.empty_id, dtype=np.int64)
    tokens[: len(tag_ids), -1] = tag_ids
    tokens[len(tag_ids) + 1 :, -1] = lyric_ids
    mask = np.zeros_like(tokens, dtype=bool)
    mask[:, -1] = True
    return Prompt(tokens=tokens, mask=mask, muq_idx=len(tag_ids))


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))
