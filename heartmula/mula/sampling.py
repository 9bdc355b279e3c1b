"""Logits -> codes on the device, with no host synchronization.

The random draw is counter-based: each (seed, counter, vocabulary entry) hashes to its
own uniform number. So a take's codes depend only on its own seed and position, not on
what else shares the batch, no generator state has to be carried through a captured
device graph, and the same seed gives the same song on every run.
"""

from __future__ import annotations

import math

import torch

# The random stream's constants (the hash's multiplier, the bits a uniform takes, the floor of
# -log(u)) are defined once, beside the kernel that draws the same bits on CUDA.
from ..accel.draw import GOLDEN as _GOLDEN
from ..accel.draw import MIN_EXP as _MIN_EXP
from ..accel.draw import UNIFORM_BITS

_M32 = 0xFFFFFFFF
TOPK_CAP = 256  # top-k up to this uses a partial top-k instead of sorting the whole vocabulary


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


NOISE_MIN = -math.log(-math.log(2.0**-24))  # the noise of the smallest uniform, -2.81
NOISE_MAX = -math.log(-math.log1p(-(2.0**-24)))  # of the largest, 16.64


def row_hashes(seeds: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """seeds [R] int64, counter [] or [1] int64 (unique per draw) -> [R] 32-bit row keys."""
    return fmix32((seeds & _M32) ^ fmix32((seeds >> 32) ^ fmix32(counter.reshape(-1) + _GOLDEN)))


def uniform_from_hash(h: torch.Tensor) -> torch.Tensor:
    """32-bit hashes (int64) -> float32 uniforms strictly inside (0, 1)."""
    return ((h >> (32 - UNIFORM_BITS)) * 2 + 1).float() * (2.0**-24)


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    return -torch.log((-torch.log(u)).clamp_min(_MIN_EXP))


def gumbel_noise(seeds: torch.Tensor, counter: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    # seeds: [R] int64; counter: [] or [1] int64; keys: [V] -> [R, V] float32, finite
    h = fmix32(row_hashes(seeds, counter)[:, None] ^ keys[None, :])
    return gumbel_from_uniform(uniform_from_hash(h))


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
    """One code per row from softmax(scores) restricted to the scores >= kth [R, 1] (entries
    that tie the k-th score are kept, as Hugging Face's top-k keeps them).

    The mask is applied after the noise is added, so no noise value, not +inf and not NaN,
    can lift an entry below the threshold over a kept one."""
    keep = scores >= kth  # False for NaN scores too
    # Gumbel-max: argmax(scores + Gumbel noise) is a draw from softmax(scores).
    noisy = torch.where(keep, scores + gumbel_noise(seeds, counter, keys), float("-inf"))
    return noisy.argmax(dim=-1)



def guided_scores(logits, cfg_scale, temperature, guided: bool):
    """[rows, V] logits -> [takes, V] float32 scores: guidance applied, then the temperature.
    Under guidance rows are [cond takes..., uncond takes...]."""
    if guided:
        n = logits.shape[0] // 2
        logits = logits[n:] + (logits[:n] - logits[n:]) * cfg_scale
    scores = logits.float() / temperature
    # NaN (a broken row, or -inf in both rows of a guided take) ranks below every number: it
    # takes no top-k place and is never drawn. A sort would rank it first.
    return torch.where(scores.isnan(), float("-inf"), scores)


def draw_codes(scores, kth_score, seeds, counter, keys, guided: bool):
    """One draw per take among its scores >= kth_score; under guidance both rows of a take
    get it."""
    codes = draw(scores, kth_score, seeds, counter, keys)
    return codes.repeat(2) if guided else codes


def pick_codes(logits, cfg_scale, temperature, topk, seeds, counter, keys, guided: bool, topk_cap: int | None = None):
    """logits [rows, V] -> codes [rows], all in torch: one draw per take from
    softmax(guided logits / temperature) restricted to its top k.

    cfg_scale, temperature, topk, counter: 0-d device tensors (a slider move changes values,
    never shapes, so a captured graph stays valid); seeds: [takes]. `topk_cap`, a static
    bound on topk, lets a partial top-k replace the full sort."""
    scores = guided_scores(logits, cfg_scale, temperature, guided)
    return draw_codes(scores, topk_threshold(scores, topk, topk_cap), seeds, counter, keys, guided)


def topk_cap_for(topk: int) -> int | None:
    """The static top-k bound buffers are built for: TOPK_CAP, or None (a full sort) above it."""
    return TOPK_CAP if topk <= TOPK_CAP else None

def tally_draws(scores: torch.Tensor, kth: torch.Tensor, codes: torch.Tensor, tally: torch.Tensor) -> None:
    """A check beside sampling, not part of it: adds to `tally` [3] int64 on the device the
    number of draws, of draws scored below the k-th score (never allowed) and of draws scored
    below the row's best (under top-k 1, a draw that is not the argmax). No host sync."""
    # scores [R, V], kth [R, 1], codes [R]
    picked = scores.gather(-1, codes[:, None])
    tally[0] += codes.numel()
    tally[1] += (~(picked >= kth)).sum()
    tally[2] += (picked < scores.amax(dim=-1, keepdim=True)).sum()
