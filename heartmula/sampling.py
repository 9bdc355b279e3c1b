"""Logits -> codes on the device, with no host synchronization.

The random draw is counter-based: each (seed, counter, vocabulary entry) hashes to its
own uniform number. So a take's codes depend only on its own seed and position, not on
what else shares the batch, no generator state has to be carried through a captured
device graph, and the same seed gives the same song on every run.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mul32(h: torch.Tensor, c: int) -> torch.Tensor:
    """(h * c) mod 2**32 for 0 <= h < 2**32, in int64 without signed overflow."""
    lo, hi = h & 0xFFFF, h >> 16
    return (lo * c + ((hi * (c & 0xFFFF)) << 16)) & _M32


def fmix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finalizer on int64 tensors holding values in [0, 2**32)."""
    h = h & _M32
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def vocab_keys(vocab_size: int, device=None) -> torch.Tensor:
    """Per-entry hash keys, computed once and kept with the caches."""
    return fmix32(_mul32(torch.arange(vocab_size, device=device, dtype=torch.int64), _GOLDEN))


def gumbel_noise(seeds: torch.Tensor, counter: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    # seeds: [R] int64; counter: [] or [1] int64 (unique per draw); keys: [V] -> [R, V] float32
    row = fmix32((seeds & _M32) ^ fmix32((seeds >> 32) ^ fmix32(counter.reshape(-1) + _GOLDEN)))
    h = fmix32(row[:, None] ^ keys[None, :])
    u = ((h >> 8).float() + 0.5) * (1.0 / (1 << 24))  # uniform in (0, 1), 24 bits
    return -torch.log(-torch.log(u))


def topk_threshold(scores: torch.Tensor, topk: torch.Tensor, topk_cap: int | None = None) -> torch.Tensor:
    """The k-th largest score of each row [R, 1]; k a 0-d device tensor.

    torch.topk would need k as a Python int, so the largest `topk_cap` (or all) scores are
    ranked and the k-th is read on the device. `kth.py` does the same in one kernel on CUDA."""
    if topk_cap is not None and topk_cap < scores.shape[-1]:
        ranked = scores.topk(topk_cap, dim=-1).values
    else:
        ranked = scores.sort(dim=-1, descending=True).values
    return ranked.gather(-1, (topk - 1).reshape(1, 1).expand(scores.shape[0], 1))


def draw(scores: torch.Tensor, kth: torch.Tensor, seeds: torch.Tensor, counter: torch.Tensor,
         keys: torch.Tensor) -> torch.Tensor:
    """One code per row from softmax(scores) restricted to the scores >= kth [R, 1]."""
    scores = scores.masked_fill(scores < kth, float("-inf"))
    # Gumbel-max: argmax(scores + Gumbel noise) is a draw from softmax(scores).
    return (scores + gumbel_noise(seeds, counter, keys)).argmax(dim=-1)

