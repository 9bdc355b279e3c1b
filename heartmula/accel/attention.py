"""Decode attention in one Triton kernel: a few query rows against a layer's KV cache.

A decode step has one or two query positions per row. The compiled torch path takes three
kernels a layer for it (scores as a batched product, a softmax, the weighted sum as a second
product) that read the whole length the step was captured for: 8.6 µs of each backbone layer
on an H200 at position 500. This kernel takes ~7.5 µs there (it is bound by its chain of
latencies, not by the ~4 MB it reads) and reads only the filled positions, so it gains more
as a song grows. The cache of each (row, kv head) is split over several programs along the
positions, so that even 2 rows x 8 kv heads keep the whole GPU reading;
each program keeps an online softmax over its part, and the last program of a (row, kv
head) to finish (an atomic count) merges the parts in a fixed order, so results do not
depend on which program finishes when.

The mask is the causal one `Llama.position_inputs` makes (key position <= query position),
computed here from the positions instead of read, and no program reads past the last
position any query attends to: the length the step was captured for only bounds the grid.
"""

from __future__ import annotations

import functools
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

BLOCK_P = 64  # cache positions a program reads per loop step
WARPS, STAGES = 4, 3  # the launch's warps and the position loop's software-pipeline depth
SHORT_WARPS = 4  # warps for the depth decoder's short caches (one block of positions a program)
MAX_POSITIONS = 2  # query positions a step may have (the depth decoder's first step has 2)
COUNTERS = 4096  # (row, kv head) pairs one call may have; a larger batch stays on torch's path

if triton is not None:

    @triton.jit
    def _dot(a, b, WIDEN: tl.constexpr):
        if WIDEN:  # Triton's interpreter multiplies 16-bit floats as their raw bits: widen both
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        return tl.dot(a, b)

    @triton.jit
    def _rope(x_at, rope_at, ok, dtype):
        # RoPE as `model.apply_rope` computes it: adjacent pairs (x[2i], x[2i+1]) of the
        # entries at x_at (the even ones) rotated by rope row (cos, sin) in float32, then
        # rounded to the cache's dtype, then put back in their interleaved order
        a = tl.load(x_at, mask=ok, other=0.0).to(tl.float32)
        b = tl.load(x_at + 1, mask=ok, other=0.0).to(tl.float32)
        cos = tl.load(rope_at, mask=ok, other=0.0)
        sin = tl.load(rope_at + 1, mask=ok, other=0.0)
        return tl.interleave((a * cos - b * sin).to(dtype), (b * cos + a * sin).to(dtype))

    @triton.jit
    def _new_kv(QKV, ROPE, POS, s: tl.constexpr, S, b, h, NH, HKV, stride_qb, stride_qs, stride_rs, i, i_ok, d,
                d_ok, D: tl.constexpr, dtype):
        # this step's key (RoPE applied) and value at query position s of row b, kv head h,
        # and its position (-1 where s >= S: matches no key)
        at = QKV + b * stride_qb + s * stride_qs
        # (the masks as vectors: Triton's interpreter refuses a scalar one in a vector's and)
        k = _rope(at + (NH + h) * D + 2 * i, ROPE + s * stride_rs + 2 * i, i_ok & (i * 0 + s < S), dtype)
        v = tl.load(at + (NH + HKV + h) * D + d, mask=d_ok & (d * 0 + s < S), other=0.0)
        return k, v, tl.where(s < S, tl.load(POS + tl.minimum(s, S - 1)), -1)

    @triton.jit
    def _decode_attention_kernel(Q, K, V, POS, Y, PART_ACC, PART_ML, COUNT, ROPE,
                                 S, HKV, SCALE, stride_rs,
                                 stride_qb, stride_qs, stride_qh,
                                 stride_kb, stride_kh, stride_kp,
                                 stride_vb, stride_vh, stride_vp,
                                 stride_yb, stride_ys,
                                 G: tl.constexpr, ROWS: tl.constexpr, D: tl.constexpr, D_PAD: tl.constexpr,
                                 BLOCK: tl.constexpr, SPLITS: tl.constexpr, MAX_ROWS: tl.constexpr,
                                 STEP: tl.constexpr, WIDEN: tl.constexpr):
        pair = tl.program_id(0)  # (row b, kv head h)
        split = tl.program_id(1)
        b = pair // HKV
        h = pair % HKV
        # Query rows r = s * G + g: query position s, head h * G + g (the g query heads
        # sharing kv head h). ROWS pads S * G to tl.dot's 16; padded rows copy position S - 1
        # so that their softmax stays finite, and are never stored.
        r = tl.arange(0, ROWS)
        row_ok = r < S * G
        s = tl.minimum(r // G, S - 1)
        head = h * G + r % G
        pos = tl.load(POS + s)  # [ROWS] each row's own position: it sees keys 0 .. pos
        d = tl.arange(0, D_PAD)
        d_ok = d < D
        k_at = K + b * stride_kb + h * stride_kh
        v_at = V + b * stride_vb + h * stride_vh
        if STEP:
            # Q is the step's q, k, v projection [B, S, (H + 2 Hkv) D] before RoPE: rotate q
            # here, and this step's keys and values, which every program uses from registers
            # (the cache may not hold them yet) and split 0 writes to the cache.
            i = tl.arange(0, D_PAD // 2)
            i_ok = i < D // 2
            q = _rope(Q + b * stride_qb + s[:, None] * stride_qs + head[:, None] * D + 2 * i[None, :],
                      ROPE + s[:, None] * stride_rs + 2 * i[None, :], i_ok[None, :], K.dtype.element_ty)
            k0, v0, pos0 = _new_kv(Q, ROPE, POS, 0, S, b, h, HKV * G, HKV, stride_qb, stride_qs, stride_rs,
                                   i, i_ok, d, d_ok, D, K.dtype.element_ty)
            k1, v1, pos1 = _new_kv(Q, ROPE, POS, 1, S, b, h, HKV * G, HKV, stride_qb, stride_qs, stride_rs,
                                   i, i_ok, d, d_ok, D, K.dtype.element_ty)
            if split == 0:
                tl.store(k_at + pos0 * stride_kp + d, k0, mask=d_ok)
                tl.store(v_at + pos0 * stride_vp + d, v0, mask=d_ok)
                if S > 1:
                    tl.store(k_at + pos1 * stride_kp + d, k1, mask=d_ok)
                    tl.store(v_at + pos1 * stride_vp + d, v1, mask=d_ok)
        else:
            q = tl.load(Q + b * stride_qb + s[:, None] * stride_qs + head[:, None] * stride_qh + d[None, :],
                        mask=d_ok[None, :], other=0.0)

        # This program's share of the positions [0, hi) that some row attends to.
        hi = tl.max(pos, axis=0) + 1
        per = tl.cdiv(tl.cdiv(hi, BLOCK), SPLITS) * BLOCK
        start = split * per
        end = tl.minimum(start + per, hi)

        m = tl.full([ROWS], float("-inf"), tl.float32)
        l = tl.zeros([ROWS], tl.float32)
        acc = tl.zeros([ROWS, D_PAD], tl.float32)
        for p0 in range(start, end, BLOCK):
            p = p0 + tl.arange(0, BLOCK)
            p_ok = p < end
            kv_ok = p_ok[:, None] & d_ok[None, :]
            k = tl.load(k_at + p[:, None] * stride_kp + d[None, :], mask=kv_ok, other=0.0)
            v = tl.load(v_at + p[:, None] * stride_vp + d[None, :], mask=kv_ok, other=0.0)
            if STEP:
                k = tl.where((p == pos0)[:, None], k0[None, :], k)
                k = tl.where((p == pos1)[:, None], k1[None, :], k)
                v = tl.where((p == pos0)[:, None], v0[None, :], v)
                v = tl.where((p == pos1)[:, None], v1[None, :], v)
            scores = _dot(q, tl.trans(k), WIDEN) * SCALE
            scores = tl.where(p_ok[None, :] & (p[None, :] <= pos[:, None]), scores, float("-inf"))
            m_new = tl.maximum(m, tl.max(scores, axis=1))
            # A row with no key in this block yet keeps m = -inf: exponents against 0 then,
            # never -inf - -inf.
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m - m_ref)
            probs = tl.exp(scores - m_ref[:, None])
            l = l * alpha + tl.sum(probs, axis=1)
            acc = acc * alpha[:, None] + _dot(probs.to(v.dtype), v, WIDEN)
            m = m_new

        y_at = Y + b * stride_yb + s[:, None] * stride_ys + head[:, None] * D + d[None, :]
        y_ok = row_ok[:, None] & d_ok[None, :]
        if SPLITS == 1:
            tl.store(y_at, (acc / l[:, None]).to(Y.dtype.element_ty), mask=y_ok)
        else:
            # parts laid out [pair, row, split, ...] so that the merge reads a row's parts in one load
            part = (pair * ROWS + r) * SPLITS + split
            tl.store(PART_ACC + part[:, None] * D_PAD + d[None, :], acc, mask=y_ok)
            tl.store(PART_ML + 2 * part, m, mask=row_ok)
            tl.store(PART_ML + 2 * part + 1, l, mask=row_ok)
            # Every thread's stores above happen before the count (release); the program
            # that counts last sees them all (acquire) and merges the parts in split order.
            tl.debug_barrier()
            done = tl.atomic_add(COUNT + pair, 1, sem="acq_rel")
            if done == SPLITS - 1:
                tl.debug_barrier()
                j = tl.arange(0, SPLITS)
                for row in tl.static_range(MAX_ROWS):
                    if row < S * G:
                        at = (pair * ROWS + row) * SPLITS + j
                        m_j = tl.load(PART_ML + 2 * at, cache_modifier=".cg")
                        # split 0 holds key 0, which every row attends to: the top is
                        # finite, and an empty part (m = -inf) weighs exactly 0
                        w = tl.exp(m_j - tl.max(m_j, axis=0))
                        total = tl.sum(w * tl.load(PART_ML + 2 * at + 1, cache_modifier=".cg"), axis=0)
                        parts = tl.load(PART_ACC + at[:, None] * D_PAD + d[None, :], cache_modifier=".cg")
                        out = tl.sum(w[:, None] * parts, axis=0) / total
                        s_row = row // G
                        tl.store(Y + b * stride_yb + s_row * stride_ys + (h * G + row % G) * D + d,
                                 out.to(Y.dtype.element_ty), mask=d_ok)
                tl.atomic_xchg(COUNT + pair, 0)  # ready for the next call (and graph replay)


_COUNTS: dict[tuple[torch.device, int], torch.Tensor] = {}


@functools.cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _counters(device: torch.device) -> torch.Tensor:
    # Zeros that every call leaves zero again; one set per device and stream, kept for the
    # process (device graphs hold its address), so two streams never share a count.
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device, stream)
    if key not in _COUNTS:
        _COUNTS[key] = torch.zeros(COUNTERS, dtype=torch.int32, device=device)
    return _COUNTS[key]


def splits_for(pairs: int, attn_len: int, programs: int) -> int:
    """Programs per (row, kv head), a power of two (the merge loads them as one tile): about
    `programs` programs in all, no more than the length has blocks."""
    per_pair = triton.cdiv(programs, pairs)
    return min(triton.next_power_of_2(triton.cdiv(attn_len, BLOCK_P)), 1 << (per_pair.bit_length() - 1))


def supports(q: torch.Tensor, k_cache: torch.Tensor) -> bool:
    """Whether `decode_attention` takes these: 16-bit activations (tl.dot would round float32
    ones to tf32), at most MAX_POSITIONS query positions, and few enough (row, kv head) pairs."""
    b, s = q.shape[:2]
    return (q.dtype in (torch.bfloat16, torch.float16) and k_cache.dtype == q.dtype and s <= MAX_POSITIONS
            and b * k_cache.shape[1] <= COUNTERS)


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, input_pos: torch.Tensor,
                     attn_len: int, programs: int | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + causal mask) v over cache positions [0, attn_len).

    q: [B, S, H, D] (RoPE applied), S <= 2; k_cache, v_cache: [B, Hkv, positions, D], already
    holding this step's keys and values at `input_pos` [S] (int64, each < attn_len). Query head
    i reads kv head i // (H / Hkv). Returns [B, S, H * D] in q's dtype.
    programs: the grid to aim for (default: one per SM, the best of 16-528 on an H200)."""
    n_head = q.shape[2]
    if q.stride(-1) != 1:
        raise ValueError("decode_attention needs q contiguous along the head dimension")
    return _launch(q, None, k_cache, v_cache, input_pos, attn_len, n_head, programs)


def decode_step(qkv: torch.Tensor, rope: torch.Tensor, input_pos: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, attn_len: int, n_head: int, programs: int | None = None) -> torch.Tensor:
    """A decode step's attention from its q, k, v projection: RoPE on q and k, k and v written
    to the caches at `input_pos`, then `decode_attention`. What `model.Attention` does in three
    more kernels (q's RoPE, k's RoPE with its cache write, v's cache write).

    qkv: [B, S, (n_head + 2 Hkv) D] (q, k, v side by side, before RoPE), S <= 2; rope: [S, D/2, 2]
    float32 (cos, sin) of the positions `input_pos` [S]. Returns [B, S, n_head * D]."""
    b, s, width = qkv.shape
    n_kv, d = k_cache.shape[1], k_cache.shape[-1]
    if width != (n_head + 2 * n_kv) * d or qkv.stride(-1) != 1 or d % 2:
        raise ValueError(f"decode_step takes qkv [B, S, (n_head + 2 Hkv) D] = [B, S, {(n_head + 2 * n_kv) * d}], "
                         f"contiguous along it, even D; got {tuple(qkv.shape)} for caches {tuple(k_cache.shape)}")
    if rope.shape != (s, d // 2, 2) or rope.dtype != torch.float32:
        raise ValueError(f"rope must be float32 [{s}, {d // 2}, 2]; got {rope.dtype} {tuple(rope.shape)}")
    rope = rope.contiguous()
    q = qkv[..., : n_head * d].unflatten(-1, (n_head, d))  # for its shape and strides; the kernel reads qkv
    return _launch(q, rope, k_cache, v_cache, input_pos, attn_len, n_head, programs)


def _launch(q, rope, k_cache, v_cache, input_pos, attn_len, n_head, programs):
    b, s, _, d = q.shape
    n_kv = k_cache.shape[1]
    if not supports(q, k_cache) or n_head % n_kv or k_cache.shape[-1] != d or v_cache.shape != k_cache.shape:
        raise ValueError(f"decode_attention takes q [B, S<={MAX_POSITIONS}, H, D] 16-bit and caches [B, Hkv, P, D] "
                         f"of its dtype with H a multiple of Hkv; got q {q.dtype} {tuple(q.shape)}, "
                         f"k {k_cache.dtype} {tuple(k_cache.shape)}, v {tuple(v_cache.shape)}")
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("decode_attention needs the caches contiguous along the head dimension")
    g = n_head // n_kv
    rows = max(16, triton.next_power_of_2(s * g))
    d_pad = triton.next_power_of_2(d)
    if programs is None:
        programs = _sm_count(q.device) if q.is_cuda else 8
    splits = splits_for(b * n_kv, attn_len, programs)
    y = torch.empty(b, s, n_head * d, dtype=q.dtype, device=q.device)
    parts = b * n_kv * rows * splits if splits > 1 else 0
    part_acc = torch.empty(parts * d_pad, dtype=torch.float32, device=q.device)
    part_ml = torch.empty(parts * 2, dtype=torch.float32, device=q.device)
    counts = _counters(q.device) if splits > 1 else y
    _decode_attention_kernel[(b * n_kv, splits)](
        q, k_cache, v_cache, input_pos, y, part_acc, part_ml, counts, rope if rope is not None else part_ml,
        s, n_kv, d**-0.5, rope.stride(0) if rope is not None else 0,
        q.stride(0), q.stride(1), q.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        y.stride(0), y.stride(1),
        G=g, ROWS=rows, D=d, D_PAD=d_pad, BLOCK=BLOCK_P if attn_len > 16 else 16, SPLITS=splits, MAX_ROWS=MAX_POSITIONS * g,
        STEP=rope is not None, WIDEN=os.environ.get("TRITON_INTERPRET") == "1", num_warps=WARPS if attn_len > 16 else SHORT_WARPS,
        num_stages=STAGES,
    )
    return y


# Inside torch.compile'd blocks the kernel is an opaque operator (as gemv.py's products).
@torch.library.custom_op("heartmula::decode_step", mutates_args=("k_cache", "v_cache"))
def _decode_step_op(qkv: torch.Tensor, rope: torch.Tensor, input_pos: torch.Tensor, k_cache: torch.Tensor,
                    v_cache: torch.Tensor, attn_len: int, n_head: int) -> torch.Tensor:
    return decode_step(qkv, rope, input_pos, k_cache, v_cache, attn_len, n_head)


@_decode_step_op.register_fake
def _(qkv, rope, input_pos, k_cache, v_cache, attn_len, n_head):
    return qkv.new_empty(qkv.shape[0], qkv.shape[1], n_head * k_cache.shape[-1])


def step(qkv: torch.Tensor, rope: torch.Tensor, input_pos: torch.Tensor, k_cache: torch.Tensor,
         v_cache: torch.Tensor, attn_len: int, n_head: int) -> torch.Tensor:
    """`decode_step` callable from compiled and eager code alike (the caches are written in place:
    compiled code calls the kernel on the cache buffers themselves)."""
    if torch.compiler.is_compiling():
        return _decode_step_op(qkv, rope, input_pos, k_cache, v_cache, attn_len, n_head)
    return decode_step(qkv, rope, input_pos, k_cache, v_cache, attn_len, n_head)
