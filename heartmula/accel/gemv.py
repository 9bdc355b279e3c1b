"""A matrix-vector product kernel for the decode step's codebook heads and projection
(Triton; CUDA, or Triton's CPU interpreter in tests).

A decode step multiplies two rows (one take, guided) by the eight [8197, 3072] codebook
heads and the [3072, 3072] projection. cuBLAS runs these at ~1.3 TB/s on an H100, under
half the card's bandwidth (`python -m heartmula.bench --what heads`: 38.8 µs a head).
One program per few weight rows, reading each row once in long coalesced runs, streams
them at ~2.2 TB/s (22.7 µs), and writes float32 logits directly, so sampling needs no
cast kernel.

Int8 weights (quant.py's `quant="int8"`) go through the same kernel: it loads the int8
bytes, widens them in registers and multiplies each output by its row's scale, so a step
reads half the bytes and no dequantized copy is ever made.

The blocks' products (q/k/v, w1/w3, w2, attention output) at 2 rows use it too: with
`stages` of asynchronous loads in flight it streams 2.2-2.6 TB/s, and 3072-row outputs
need none of cuBLAS's split-K reduce kernels (`bench --what products`). Tiles per shape
come from that sweep; more rows (the depth decoder's first step, several takes) stay on
cuBLAS, where it was not measured faster. Int8 weights take every decode shape (up to
INT8_DECODE_ROWS rows, in passes of INT8_MAX_ROWS) with tiles per (rows bucket, shape) from
`bench --what products --quant int8` (INT8_TUNED).
"""

from __future__ import annotations

import os

import torch

MAX_ROWS = 4  # rows the kernel was measured on; more go to F.linear
# int8 weights: up to this many rows per pass (BLOCK_M 8); more rows take several passes.
# torch has no int8 x bf16 product, so the alternative is widening the weight every step,
# which moves 5 bytes per weight where a pass moves 1.
INT8_MAX_ROWS = 8
INT8_DECODE_ROWS = 32  # up to here decode products use the int8 kernel (8 takes x cfg x 2 positions)
# More rows than this in an int8 pass (several takes) go to the tensor cores (`_matvec_dot_kernel`):
# at 8 rows the FMA kernel spends 8 multiply-adds per weight byte and streams 0.8-0.95 TB/s,
# where a tl.dot of the same bytes padded to 16 rows streams 1.1-2.9 TB/s at any row count (`bench
# --what products`, H200). At 2 rows the FMA kernel wins on all but the largest shape.
INT8_DOT_MIN_ROWS = 5
DOT_ROWS = 16  # tl.dot's smallest tile: the rows of one tensor-core pass


def stack_gate_up(w1: torch.Tensor, w3: torch.Tensor) -> torch.Tensor:
    """w1 and w3 (or their scales) as the one stacked w13 the feed-forward multiplies by, rows
    interleaved (w1[0], w3[0], w1[1], ...): each kernel program then holds the gate and the
    value of the same outputs, and its epilogue computes SwiGLU (`matvec(glu=True)`), one
    kernel a feed-forward fewer (H200: 3.473 -> 3.416 ms a frame, docs/performance.md)."""
    return torch.stack([w1, w3], 1).flatten(0, 1)


def gate_and_up(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x @ w1.T, x @ w3.T) out of y = x @ w13.T, in `stack_gate_up`'s layout."""
    return y.unflatten(-1, (-1, 2)).unbind(-1)


try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs may have none.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


if triton is not None:

    @triton.jit
    def _matvec_kernel(X, W, S, Y, M, N, K, stride_xm, stride_wn, stride_ym,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       STAGES: tl.constexpr, SCALED: tl.constexpr, GLU: tl.constexpr = False):
        rm = tl.arange(0, BLOCK_M)
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        m_ok, n_ok = rm < M, rn < N
        # Partial sums stay elementwise over the K tile and are reduced once at the end:
        # the loop is loads and FMAs only.
        acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_K), dtype=tl.float32)
        # STAGES > 1 lets Triton issue the next tiles' loads before this one's FMAs
        # (asynchronous copies on Hopper), keeping more of the weight stream in flight.
        for k0 in tl.range(0, K, BLOCK_K, num_stages=STAGES):
            k = k0 + rk
            k_ok = k < K
            x = tl.load(X + rm[:, None] * stride_xm + k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            # Each weight is read once per step: keep it from pushing activations out of L2.
            w = tl.load(W + rn[:, None] * stride_wn + k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0,
                        eviction_policy="evict_first")
            if SCALED:
                # int8 -> float32 without the conversion instruction, which Hopper issues at a
                # quarter of the FMA rate and which then limits the stream: 2^23 + 128 + q, built
                # in the bits, holds q exactly in its low mantissa bits; one add removes the rest.
                wf = (w.to(tl.int32) + 0x4B000080).to(tl.float32, bitcast=True) - 8388736.0
            else:
                wf = w.to(tl.float32)
            acc += x.to(tl.float32)[:, None, :] * wf[None, :, :]
        y = tl.sum(acc, axis=2)
        if SCALED:
            # int8 weights (quant.py): one float32 scale per output row, applied once to the
            # row's sum rather than to every weight, so no dequantized copy exists anywhere.
            s = tl.load(S + rn, mask=n_ok, other=0.0)
            y = y * s[None, :]
        if GLU:
            # W's rows are (gate, value) pairs (`stack_gate_up`): silu(gate) * value, each first
            # rounded to Y's dtype as the unfused product's output would be; Y has N / 2 columns.
            y = y.to(Y.dtype.element_ty).to(tl.float32)
            a, b = tl.split(tl.reshape(y, (BLOCK_M, BLOCK_N // 2, 2)))
            rh = tl.program_id(0) * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
            tl.store(Y + rm[:, None] * stride_ym + rh[None, :], (a / (1.0 + tl.exp(-a)) * b).to(Y.dtype.element_ty),
                     mask=m_ok[:, None] & (rh < N // 2)[None, :])
        else:
            tl.store(Y + rm[:, None] * stride_ym + rn[None, :], y.to(Y.dtype.element_ty),
                     mask=m_ok[:, None] & n_ok[None, :])


    @triton.jit
    def _matvec_dot_kernel(X, W, S, Y, M, N, K, stride_xm, stride_wn, stride_ym,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           STAGES: tl.constexpr, EXACT: tl.constexpr):
        # Y[m, n] = S[n] * sum_k X[m, k] W[n, k] for an int8 W on the tensor cores: the weight tile is
        # the product's wide side ([BLOCK_N, BLOCK_K] x [BLOCK_K, BLOCK_M], rows padded to BLOCK_M).
        # Every int8 value is exact in bf16 and fp16, so the products are exact and only the float32
        # accumulation order differs from the FMA kernel.
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = tl.arange(0, BLOCK_M)
        rk = tl.arange(0, BLOCK_K)
        n_ok, m_ok = rn < N, rm < M
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        for k0 in tl.range(0, K, BLOCK_K, num_stages=STAGES):
            k = k0 + rk
            k_ok = k < K
            w = tl.load(W + rn[:, None] * stride_wn + k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0,
                        eviction_policy="evict_first")
            xt = tl.load(X + rm[None, :] * stride_xm + k[:, None], mask=m_ok[None, :] & k_ok[:, None], other=0.0)
            if EXACT:  # Triton's interpreter multiplies 16-bit floats as their raw bits: widen both
                acc = tl.dot(w.to(tl.float32), xt.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(w.to(xt.dtype), xt, acc)
        y = acc * tl.load(S + rn, mask=n_ok, other=0.0)[:, None]
        tl.store(Y + rm[None, :] * stride_ym + rn[:, None], y.to(Y.dtype.element_ty),
                 mask=n_ok[:, None] & m_ok[None, :])


def on_tensor_cores(rows: int, dtype: torch.dtype) -> bool:
    """Whether an int8 pass of `rows` rows of `dtype` activations runs on `_matvec_dot_kernel`:
    several takes' rows of 16-bit activations (float32 ones would be rounded by tl.dot)."""
    return rows >= INT8_DOT_MIN_ROWS and dtype in (torch.bfloat16, torch.float16)


def dot_tiles(n: int, k: int) -> tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_K, warps, stages) of `_matvec_dot_kernel` for an int8 [n, k] weight: the best of
    a sweep at the 3B shapes on an H200 (2026-12-01, 156 tiles each; the top five within 5 %): the
    3072-row products want 4 warps and a deeper pipeline, the others 2 and 3."""
    block_k = min(256, max(16, triton.next_power_of_2(k)))
    return (32, block_k, 4, 4) if n <= 4096 else (32, block_k, 2, 3)


# (N, K) -> (BLOCK_N, BLOCK_K, warps, stages): the fastest of `python -m heartmula.bench
# --what products` at 2 rows on an H100 (docs/performance.md, run 15). The top five of each
# sweep were within 2 % of each other, so DEFAULT serves shapes not listed here.
TUNED = {
    (5120, 3072): (8, 256, 2, 3),  # backbone q/k/v
    (6144, 3072): (8, 256, 2, 3),  # depth decoder q/k/v
    (3072, 3072): (4, 512, 2, 3),  # attention output, projection
    (16384, 3072): (4, 1024, 2, 4),  # w1/w3
    (3072, 8192): (4, 512, 2, 4),  # w2
    (8197, 3072): (4, 512, 2, 3),  # codebook heads
}
DEFAULT = (4, 512, 2, 3)


def tiles(m: int, n: int, k: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) for m rows of an [n, k] weight."""
    block_n, block_k, warps, stages = TUNED.get((n, k), DEFAULT)
    block_m = max(1, triton.next_power_of_2(m))
    # The partial sums are BLOCK_M x BLOCK_N x BLOCK_K registers: at 4 rows, half the K tile
    # keeps them from spilling.
    return block_m, block_n, block_k // max(1, block_m // 2), warps, stages


# (rows bucket, N, K) -> (BLOCK_N, BLOCK_K, warps, stages) for int8 weights. The rows bucket
# is BLOCK_M, the power of two at or above a pass's rows: 2 is one take guided, 4 the depth
# decoder's 2-position step of it, 8 four takes guided (and each 8-row pass of more). Measured
# by `python -m heartmula.bench --what products --quant int8` on an NVIDIA H200 (2026-12-01;
# comments: TB/s of int8 bytes read, against what `_int8_rule` reached). Shapes and buckets
# not listed (1 row: one take unguided) use `_int8_rule`. Since the 8-row passes of 16-bit
# activations run on the tensor cores (INT8_DOT_MIN_ROWS), the 8-row entries serve float32 ones.
INT8_TUNED = {
    (2, 3072, 3072): (4, 512, 2, 3),  # output, projection, 1.50 TB/s (int8_tiles 1.23)
    (2, 3072, 8192): (8, 1024, 4, 3),  # w2, 2.24 TB/s (int8_tiles 1.95)
    (2, 5120, 3072): (4, 512, 2, 3),  # backbone q/k/v, 1.77 TB/s (int8_tiles 1.71)
    (2, 6144, 3072): (8, 512, 2, 3),  # decoder q/k/v, 2.00 TB/s (int8_tiles 1.65)
    (2, 8197, 3072): (8, 256, 2, 4),  # codebook head, 2.16 TB/s (int8_tiles 1.68)
    (2, 16384, 3072): (8, 256, 2, 4),  # w1/w3, 2.42 TB/s (int8_tiles 1.30)
    (4, 3072, 3072): (8, 256, 2, 4),  # output, projection, 1.15 TB/s (int8_tiles 0.85)
    (4, 3072, 8192): (8, 256, 4, 4),  # w2, 1.67 TB/s (int8_tiles 1.27)
    (4, 6144, 3072): (16, 256, 4, 4),  # decoder q/k/v, 1.41 TB/s (int8_tiles 1.23)
    (4, 16384, 3072): (8, 256, 2, 4),  # w1/w3, 1.67 TB/s (int8_tiles 1.10)
    (8, 3072, 3072): (4, 256, 2, 3),  # output, projection, 0.81 TB/s (int8_tiles 0.63)
    (8, 3072, 8192): (8, 256, 4, 5),  # w2, 1.11 TB/s (int8_tiles 0.89)
    (8, 5120, 3072): (4, 256, 2, 4),  # backbone q/k/v, 0.86 TB/s (int8_tiles 0.81)
    (8, 6144, 3072): (4, 256, 2, 4),  # decoder q/k/v, 0.89 TB/s (int8_tiles 0.73)
    (8, 8197, 3072): (4, 256, 2, 4),  # codebook head, 0.91 TB/s (int8_tiles 0.77)
    (8, 16384, 3072): (4, 256, 2, 4),  # w1/w3, 0.95 TB/s (int8_tiles 0.76)
}


def _int8_rule(m: int, n: int, k: int) -> tuple[int, int, int, int, int]:
    """`tiles` for an int8 weight: the K tile doubled so that a tile still moves as many bytes
    as the bf16 tile it was tuned as (the stream stays as deep), and the warps doubled so that
    each thread still holds as many partial sums (no register spills)."""
    block_m, block_n, block_k, warps, stages = tiles(m, n, k)
    return block_m, block_n, min(2 * block_k, max(16, triton.next_power_of_2(k))), min(2 * warps, 8), stages


def int8_tiles(m: int, n: int, k: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) for one pass of m <= INT8_MAX_ROWS rows of an
    int8 [n, k] weight: INT8_TUNED's entry for m's bucket, else `_int8_rule`."""
    block_m = max(1, triton.next_power_of_2(m))
    tuned = INT8_TUNED.get((block_m, n, k))
    return (block_m, *tuned) if tuned is not None else _int8_rule(m, n, k)


def fuses_glu(rows: int, dtype: torch.dtype, int8: bool) -> bool:
    """Whether `matvec(..., glu=True)` of `rows` rows computes SwiGLU in the kernel (one FMA
    pass), rather than after a tensor-core pass or with more passes than the epilogue covers."""
    return rows <= INT8_MAX_ROWS and not on_tensor_cores(rows, dtype) if int8 else rows <= MAX_ROWS


def matvec(x: torch.Tensor, weight: torch.Tensor, out_dtype: torch.dtype | None = None,
           config: tuple[int, int, int, int] | None = None, scale: torch.Tensor | None = None,
           glu: bool = False) -> torch.Tensor:
    """x @ weight.T for at most MAX_ROWS rows; x: [..., K], weight: [N, K] row-major.
    The result is in out_dtype (default x's), accumulated in float32 either way.
    config: (BLOCK_N, BLOCK_K, warps, stages) instead of `tiles`' choice (the benchmark's sweep).
    scale: for an int8 `weight` (quant.py), its float32 per-row scales [N]: the result is
    (x @ weight.T) * scale, read from the int8 bytes directly.
    glu: weight is a `stack_gate_up` stack; returns silu(gate) * value, [..., N / 2]."""
    lead, k = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m, n = x2.shape[0], weight.shape[0]
    if m > (INT8_DECODE_ROWS if scale is not None else MAX_ROWS) or weight.dim() != 2 or weight.shape[1] != k or weight.stride(-1) != 1:
        raise ValueError(f"matvec takes at most {MAX_ROWS} rows ({INT8_DECODE_ROWS} of an int8 one) of a row-major "
                         f"[N, {k}] weight; "
                         f"got x {tuple(x.shape)}, weight {tuple(weight.shape)}")
    if (weight.dtype == torch.int8) != (scale is not None):
        raise ValueError(f"an int8 weight needs its per-row scales and only an int8 weight takes them; got a "
                         f"{weight.dtype} weight and scale={None if scale is None else tuple(scale.shape)}")
    if scale is not None and (scale.shape != (n,) or scale.dtype != torch.float32 or scale.stride(0) != 1):
        raise ValueError(f"scale must be contiguous float32 [{n}] (one per weight row); got "
                         f"{scale.dtype} {tuple(scale.shape)}")
    if glu and n % 2:
        raise ValueError(f"matvec(glu=True) takes a `stack_gate_up` stack, an even number of weight rows; got {n}")
    if glu and not fuses_glu(m, x2.dtype, scale is not None):
        raise ValueError(f"matvec(glu=True) computes SwiGLU in one FMA pass; {m} rows of {x2.dtype} do not "
                         f"take one (see fuses_glu): multiply, then `gate_and_up`")
    y = torch.empty(m, n // 2 if glu else n, dtype=out_dtype or x.dtype, device=x.device)
    if m == 0 or n == 0:
        return y.reshape(*lead, y.shape[-1])
    dot = scale is not None and config is None and on_tensor_cores(m, x2.dtype)
    per_pass = DOT_ROWS if dot else INT8_MAX_ROWS if scale is not None else MAX_ROWS
    for r0 in range(0, m, per_pass):  # one pass for up to per_pass rows (all decode shapes but the largest)
        xs, ys = x2[r0:r0 + per_pass], y[r0:r0 + per_pass]
        rows = xs.shape[0]
        if dot and on_tensor_cores(rows, xs.dtype):  # a short last pass goes to the FMA kernel
            block_n, block_k, warps, stages = dot_tiles(n, k)
            _matvec_dot_kernel[(triton.cdiv(n, block_n),)](
                xs, weight, scale, ys, rows, n, k, xs.stride(0), weight.stride(0), ys.stride(0),
                BLOCK_M=DOT_ROWS, BLOCK_N=block_n, BLOCK_K=block_k, STAGES=stages,
                EXACT=os.environ.get("TRITON_INTERPRET") == "1", num_warps=warps,
            )
            continue
        block_m, block_n, block_k, warps, stages = (int8_tiles if scale is not None else tiles)(rows, n, k)
        if config is not None:
            block_n, block_k, warps, stages = config
        _matvec_kernel[(triton.cdiv(n, block_n),)](
            xs, weight, scale if scale is not None else ys, ys, rows, n, k, xs.stride(0), weight.stride(0),
            ys.stride(0), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, STAGES=stages,
            SCALED=scale is not None, GLU=glu, num_warps=warps,
        )
    return y.reshape(*lead, y.shape[-1])


# Inside torch.compile'd blocks the kernel is an opaque operator: compiled code calls it
# like a cuBLAS product instead of tracing the Triton source.
@torch.library.custom_op("heartmula::matvec", mutates_args=())
def _matvec_op(x: torch.Tensor, weight: torch.Tensor, glu: bool = False) -> torch.Tensor:
    return matvec(x, weight, glu=glu)


@_matvec_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, glu: bool = False) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0] // 2 if glu else weight.shape[0])


def linear(x: torch.Tensor, weight: torch.Tensor, glu: bool = False) -> torch.Tensor:
    """`matvec(x, weight, glu=glu)` callable from compiled and eager code alike (no bias, x's dtype)."""
    if torch.compiler.is_compiling():
        return _matvec_op(x, weight, glu)
    return matvec(x, weight, glu=glu)


@torch.library.custom_op("heartmula::matvec_int8", mutates_args=())
def _matvec_int8_op(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, glu: bool = False) -> torch.Tensor:
    return matvec(x, weight, scale=scale, glu=glu)


@_matvec_int8_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, glu: bool = False) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.shape[0] // 2 if glu else weight.shape[0])


def linear_int8(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, glu: bool = False) -> torch.Tensor:
    """`matvec(x, weight, scale=scale, glu=glu)` for an int8 weight, from compiled and eager code alike."""
    if torch.compiler.is_compiling():
        return _matvec_int8_op(x, weight, scale, glu)
    return matvec(x, weight, scale=scale, glu=glu)
