"""A codebook's codes from its logits in one Triton program per take.

The torch path (`mula/sampling.py`) takes four kernels a codebook, eight times a frame:
guidance and temperature, the k-th largest score, the Gumbel-max draw, and copying the
code to the unconditional row. With one take those kernels each keep a single SM busy and
the GPU waits on their launches and tails. Here one program loads both rows of its take,
finds the k-th largest score with `kth.kth_largest_key`, adds the same counter-based noise
as `sampling.gumbel_noise` and writes the argmax to both rows.
"""

from __future__ import annotations

import torch

from . import kth

# The counter-based random stream (mula/sampling.py draws the same bits in torch):
GOLDEN = 0x9E3779B9  # the hash's multiplier (2**32 / the golden ratio)
# The uniform takes the hash's top 23 bits m as (2m + 1) / 2**24: 2m + 1 < 2**24 is exact in
# float32, so u lies in [2**-24, 1 - 2**-24] for every hash, never on 0 or 1. (With 24 bits,
# m + 0.5 for m = 2**24 - 1 rounds to 2**24 in float32 and u == 1 made the noise +inf:
# about one draw in 2,000 ignored its scores.)
UNIFORM_BITS = 23
# -log(u) is at least 2**-24 in exact arithmetic; the floor only guards approximate device
# logarithms (fast-math log2 near 1), so the noise stays finite and bounded on every path.
MIN_EXP = 2.0**-30

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

if triton is not None:

    @triton.jit
    def _fmix32(h):
        # MurmurHash3's finalizer on uint32 (sampling.fmix32, which works in int64)
        h = h ^ (h >> 16)
        h = h * 0x85EBCA6B
        h = h ^ (h >> 13)
        h = h * 0xC2B2AE35
        return h ^ (h >> 16)

    @triton.jit
    def _scores(LOGITS, stride, CFG, TEMP, take, takes, offs, valid, GUIDED: tl.constexpr):
        # sampling.guided_scores for the entries `offs` of one take
        logits = tl.load(LOGITS + take * stride + offs, mask=valid, other=0.0).to(tl.float32)
        if GUIDED:  # rows are [cond takes..., uncond takes...]
            uncond = tl.load(LOGITS + (take + takes) * stride + offs, mask=valid, other=0.0).to(tl.float32)
            logits = uncond + (logits - uncond) * tl.load(CFG)
        scores = logits / tl.load(TEMP)
        # padding, and NaN as guided_scores ranks it: below every number
        return tl.where(valid & (scores == scores), scores, float("-inf"))

    @triton.jit
    def _noisy(scores, offs, kth_score, row, GOLDEN: tl.constexpr, UNIFORM_SHIFT: tl.constexpr,
               MIN_EXP: tl.constexpr):
        # sampling.gumbel_noise in uint32 (the same bits), added where sampling.draw keeps the
        # entry; the mask after the noise, so nothing lifts an entry below the k-th
        h = _fmix32(row ^ _fmix32(offs.to(tl.uint32) * GOLDEN))
        uniform = ((h >> UNIFORM_SHIFT) * 2 + 1).to(tl.float32) * (1.0 / 16777216.0)
        noise = -tl.log(tl.maximum(-tl.log(uniform), MIN_EXP))
        return tl.where(scores >= kth_score, scores + noise, float("-inf"))

    @triton.jit
    def _draw_kernel(LOGITS, stride, CODES, CFG, TEMP, TOPK, SEEDS, POS, n_codebooks, codebook, V, takes,
                     GUIDED: tl.constexpr, GOLDEN: tl.constexpr, UNIFORM_SHIFT: tl.constexpr,
                     MIN_EXP: tl.constexpr, MAIN: tl.constexpr, TAIL: tl.constexpr, ARITY: tl.constexpr,
                     PASSES: tl.constexpr):
        take = tl.program_id(0)
        offs = tl.arange(0, MAIN)  # the row as kth.py holds it: a power-of-two main part and a tail
        tail_at = MAIN + tl.arange(0, TAIL)
        scores = _scores(LOGITS, stride, CFG, TEMP, take, takes, offs, offs < V, GUIDED)
        tail = _scores(LOGITS, stride, CFG, TEMP, take, takes, tail_at, tail_at < V, GUIDED)

        key, tail_key = kth.score_keys(scores), kth.score_keys(tail)
        kth_key = kth.kth_largest_key(key, tail_key, tl.minimum(tl.load(TOPK).to(tl.int32), V), ARITY, PASSES)
        kth_score = tl.maximum(tl.max(tl.where(key <= kth_key, scores, float("-inf")), axis=0),
                               tl.max(tl.where(tail_key <= kth_key, tail, float("-inf")), axis=0))

        # sampling.row_hashes in uint32
        counter = (tl.load(POS) * n_codebooks + codebook).to(tl.uint32)
        seed = tl.load(SEEDS + take)
        row = _fmix32((seed & 0xFFFFFFFF).to(tl.uint32)
                      ^ _fmix32((seed >> 32).to(tl.uint32) ^ _fmix32(counter + GOLDEN)))
        best, at = tl.max(_noisy(scores, offs, kth_score, row, GOLDEN, UNIFORM_SHIFT, MIN_EXP), axis=0,
                          return_indices=True, return_indices_tie_break_left=True)
        best_t, at_t = tl.max(_noisy(tail, tail_at, kth_score, row, GOLDEN, UNIFORM_SHIFT, MIN_EXP), axis=0,
                              return_indices=True, return_indices_tie_break_left=True)
        code = tl.where(best_t > best, MAIN + at_t, at).to(tl.int64)  # a tie goes to the lower code, as argmax
        tl.store(CODES + take, code)
        if GUIDED:
            tl.store(CODES + take + takes, code)


WARPS = kth.WARPS


def draw_codes(logits: torch.Tensor, cfg_scale: torch.Tensor, temperature: torch.Tensor, topk: torch.Tensor,
               seeds: torch.Tensor, pos: torch.Tensor, n_codebooks: int, codebook: int, guided: bool,
               arity: int = kth.ARITY, warps: int = WARPS) -> torch.Tensor:
    """sampling.pick_codes in one kernel: logits [rows, V] float32 -> codes [rows] int64, the
    draw's counter being pos * n_codebooks + codebook (pos: the frame's [1] position tensor).
    cfg_scale, temperature, topk: 0-d device tensors; seeds: [takes] int64."""
    rows, v = logits.shape
    if logits.dtype != torch.float32 or logits.stride(-1) != 1:
        raise ValueError(f"draw_codes takes row-major float32 logits, got {logits.dtype} {tuple(logits.shape)}")
    takes = seeds.numel()
    if rows != takes * (2 if guided else 1) or v == 0:
        raise ValueError(f"draw_codes takes one logits row per take ({'two with guidance' if guided else 'unguided'}) "
                         f"of at least one code; got {rows} rows of {v} for {takes} seeds")
    codes = torch.empty(rows, dtype=torch.long, device=logits.device)
    main, tail = kth.row_split(v)
    _draw_kernel[(takes,)](logits, logits.stride(0), codes, cfg_scale, temperature, topk, seeds, pos, n_codebooks,
                           codebook, v, takes, GUIDED=guided, GOLDEN=GOLDEN,
                           UNIFORM_SHIFT=32 - UNIFORM_BITS, MIN_EXP=MIN_EXP,
                           MAIN=main, TAIL=tail, ARITY=arity, PASSES=kth.passes(arity), num_warps=warps)
    return codes
