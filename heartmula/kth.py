"""The k-th largest score of each row, for top-k sampling: one Triton program per row.

torch.topk takes k as a Python int, which a captured graph cannot change, so the torch
path ranks a fixed 256 candidates and reads the k-th on the device: a radix select and
a sort, ~60 µs per codebook on an H100 with two rows (two thread blocks busy), eight
times a frame. Here each row sits in one program's registers and a bisection over the
order-preserving integer image of the float32 scores finds the exact k-th value in 32
counting passes, for any k up to the vocabulary.
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
    def _kth_kernel(S, K, OUT, V, stride, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        x = tl.load(S + row * stride + offs, mask=offs < V, other=float("-inf"))
        # float32 bits -> int32 keys in the same order: negatives have their magnitude bits flipped
        bits = x.to(tl.int32, bitcast=True)
        key = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
        k = tl.minimum(tl.load(K).to(tl.int32), V)
        # Largest t with count(key >= t) >= k, which is the k-th largest key. Padding lanes
        # hold -inf, below every score, so they never change the answer for k <= V.
        lo = tl.min(key, axis=0).to(tl.int64)
        hi = tl.max(key, axis=0).to(tl.int64)
        for _ in range(32):  # the key range is below 2**32
            mid = lo + (hi - lo + 1) // 2
            ok = tl.sum((key >= mid.to(tl.int32)).to(tl.int32), axis=0) >= k
            lo = tl.where(ok, mid, lo)
            hi = tl.where(ok, hi, mid - 1)
        value = tl.max(tl.where(key <= lo.to(tl.int32), x, float("-inf")), axis=0)
        tl.store(OUT + row, value)


def kth_largest(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """scores [R, V] float32, k a 0-d integer device tensor (1 <= k; above V means V)
    -> [R, 1] float32, the k-th largest score of each row."""
    if scores.dtype != torch.float32 or scores.dim() != 2 or scores.stride(-1) != 1:
        raise ValueError(f"kth_largest takes row-major [R, V] float32 scores, got {scores.dtype} {tuple(scores.shape)}")
    r, v = scores.shape
    out = torch.empty(r, 1, dtype=torch.float32, device=scores.device)
    _kth_kernel[(r,)](scores, k, out, v, scores.stride(0), BLOCK=triton.next_power_of_2(v), num_warps=16)
    return out
