"""The k-th largest score of each row, for top-k sampling: one Triton program per row.

torch.topk takes k as a Python int, which a captured graph cannot change, so the torch
path ranks a fixed 256 candidates and reads the k-th on the device: a radix select and
a sort, ~60 µs per codebook on an H100 with two rows (two thread blocks busy), eight
times a frame. Here each row sits in one program's registers and a search over the
order-preserving integer image of the float32 scores finds the exact k-th value, for any
k up to the vocabulary: each pass splits the range that holds the answer ARITY ways and
counts the keys at or above each split point.

What a pass costs is its comparisons, one per key and counted split point. So a row is
held as a power-of-two main part and a short tail (8,192 + 5 codes, not 16,384 lanes of
which half are padding), and the split point at the range's low end, which always
qualifies, is not counted.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

if triton is not None:

    @triton.jit
    def kth_largest_key(key, tail, k, ARITY: tl.constexpr, PASSES: tl.constexpr):
        """The k-th largest of the int32 keys of a row held as `key` [MAIN] and `tail` [TAIL]
        (1 <= k <= how many are real; padding lanes hold the key of -inf, and no answer is
        below it, so they never change the answer)."""
        # [lo, hi] holds the answer, the largest t with count(keys >= t) >= k.
        lo = tl.minimum(tl.min(key, axis=0), tl.min(tail, axis=0)).to(tl.int64)
        hi = tl.maximum(tl.max(key, axis=0), tl.max(tail, axis=0)).to(tl.int64)
        j = tl.arange(1, ARITY).to(tl.int64)  # split points lo + j * step; j = 0 always qualifies
        for _ in range(PASSES):
            step = (hi - lo + ARITY) // ARITY
            t = tl.minimum(lo + j * step, hi).to(tl.int32)  # non-decreasing
            counts = (tl.sum((key[None, :] >= t[:, None]).to(tl.int32), axis=1)
                      + tl.sum((tail[None, :] >= t[:, None]).to(tl.int32), axis=1))
            n_ok = tl.sum((counts >= k).to(tl.int32), axis=0)  # split points above lo that qualify
            best = tl.minimum(lo + n_ok.to(tl.int64) * step, hi)
            hi = tl.minimum(best + step - 1, hi)
            lo = best
        return lo.to(tl.int32)

    @triton.jit
    def score_keys(x):
        """float32 -> int32 keys in the same order (negatives have their magnitude bits
        flipped); NaN ranks above +inf, as a descending sort puts it first."""
        bits = x.to(tl.int32, bitcast=True)
        return tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)

    @triton.jit
    def _kth_kernel(S, K, OUT, V, stride, MAIN: tl.constexpr, TAIL: tl.constexpr, ARITY: tl.constexpr,
                    PASSES: tl.constexpr):
        row = tl.program_id(0)
        x = tl.load(S + row * stride + tl.arange(0, MAIN))
        tail_at = MAIN + tl.arange(0, TAIL)
        xt = tl.load(S + row * stride + tail_at, mask=tail_at < V, other=float("-inf"))
        key, tail = score_keys(x), score_keys(xt)
        k = tl.minimum(tl.load(K).to(tl.int32), V)
        kth = kth_largest_key(key, tail, k, ARITY, PASSES)
        value = tl.maximum(tl.max(tl.where(key <= kth, x, float("-inf")), axis=0),
                           tl.max(tl.where(tail <= kth, xt, float("-inf")), axis=0))
        tl.store(OUT + row, value)


# The search's shape: (ARITY, warps) timed on an H200 with one row (docs/performance.md).
ARITY, WARPS = 3, 8
ARITIES = (2, 3, 5)  # ARITY - 1 counted split points must be a power of two


def passes(arity: int) -> int:
    """Passes that shrink a 2**32-key range to one key, ARITY-fold each."""
    n, width = 0, 2**32
    while width > 1:
        width, n = -(-width // arity), n + 1
    return n


def row_split(v: int) -> tuple[int, int]:
    """(MAIN, TAIL) lanes for a row of v > 0 entries: the largest power of two <= v, and a
    power-of-two tail for the rest (one padding lane when v is a power of two)."""
    main = 1 << (v.bit_length() - 1)
    return main, 1 if v == main else 1 << (v - main - 1).bit_length()


def kth_largest(scores: torch.Tensor, k: torch.Tensor, arity: int = ARITY, warps: int = WARPS) -> torch.Tensor:
    """scores [R, V] float32, k a 0-d integer device tensor (1 <= k; above V means V)
    -> [R, 1] float32, the k-th largest score of each row. arity (one of ARITIES) and warps:
    the search's shape; every arity is exact."""
    if scores.dtype != torch.float32 or scores.dim() != 2 or scores.stride(-1) != 1:
        raise ValueError(f"kth_largest takes row-major [R, V] float32 scores, got {scores.dtype} {tuple(scores.shape)}")
    if arity not in ARITIES or scores.shape[1] == 0:
        raise ValueError(f"kth_largest takes an arity of {ARITIES} and rows of at least one score; "
                         f"got arity {arity}, {scores.shape[1]} scores a row")
    r, v = scores.shape
    out = torch.empty(r, 1, dtype=torch.float32, device=scores.device)
    main, tail = row_split(v)
    _kth_kernel[(r,)](scores, k, out, v, scores.stride(0), MAIN=main, TAIL=tail, ARITY=arity,
                      PASSES=passes(arity), num_warps=warps)
    return out
