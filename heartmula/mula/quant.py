"""Int8 weight-only quantization of the language model (`quant="int8"`).

Every matrix a frame step streams (the blocks' products of the backbone and the depth
decoder, the projection and the codebook heads) is stored as int8 with one float32 scale
per output row: w ~= q * scale, scale = max|row| / 127, q = round(w / scale). The model
takes about 4.2 GiB instead of 7.3 (3B), and halving the bytes a step reads raises its speed
ceiling; on an H200 the step is not faster yet (docs/performance.md: the kernel's int8 tiles
are untuned). Embeddings, norms and the MuQ layer stay in
the compute dtype: they are lookups or tiny, and are not read per step.

Per-row scales commute with stacking rows, so q/k/v and w1/w3 are quantized one checkpoint
tensor at a time as they arrive (`load.py`) and stacked as int8 afterwards; the full
bf16 model never has to sit in device memory.

Products: gemv.py's kernel reads the int8 bytes and the scales directly (CUDA; CPU under
Triton's interpreter). Elsewhere (CPU, XPU, MPS, or many rows) `int8_linear` does the
same work with torch ops: one layer's weight is widened for the one product and dropped,
never the whole model.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..accel import gemv

QUANT_MODES = ("none", "int8")
QMAX = 127  # symmetric: -128 is never used, so -q is always representable
_PASS_ELEMENTS = 1 << 24  # weights quantized at once: bounds the float32 temporary (64 MB)

# Checkpoint tensors stored as int8 (official names, before fusing): the blocks' products,
# the projection and the heads. audio_head is [K-1, ddim, vocab]: its output rows are its
# last dimension, so it is transposed to [K-1, vocab, ddim] first.
QUANTIZED = re.compile(
    r"^(backbone|decoder)\.layers\.\d+\.(attn\.(q_proj|k_proj|v_proj|output_proj)|mlp\.(w1|w2|w3))\.weight$"
    r"|^projection\.weight$|^codebook0_head\.weight$|^audio_head$"
)


def check_quant(quant: str) -> str:
    """The mode, or ValueError naming the value and the choices."""
    if quant not in QUANT_MODES:
        raise ValueError(f"quant={quant!r} is not a quantization mode; use one of: {', '.join(QUANT_MODES)}")
    return quant


@torch.no_grad()
def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [..., N, K] (any float dtype, any strides) -> (q int8 [..., N, K], scale float32 [..., N]),
    with w ~= q * scale[..., None] and |w - q * scale| <= scale / 2 elementwise.

    A row of zeros gets scale 0 (and q 0): it reconstructs exactly and multiplies to 0. A row
    holding inf or NaN gets a non-finite scale (inf, NaN) and unspecified codes: int8 cannot
    hold it, and the loader refuses such a checkpoint by looking at the scales.

    It runs where w is, queued like any product: no host sync, no Python loop per row. Rows
    go through in passes of _PASS_ELEMENTS, so the one float32 temporary stays at ~64 MB
    however large w is, and a transposed view (the audio heads) is read in place, not copied
    whole. Arithmetic (tests/test_quant.py holds the reference): max|row| and the division
    in float32, round half to even, clamp to +-QMAX."""
    if not w.is_floating_point():
        raise ValueError(f"quantize_rows takes floating-point weights, got {w.dtype}")
    if w.dim() < 2:
        raise ValueError(f"quantize_rows takes [..., N, K] weights, got shape {tuple(w.shape)}")
    if w.device.type == "meta":
        # The loader builds the quantized structure on the meta device (quantize_model), where
        # only shapes exist: tracing the arithmetic there took ~0.4 s of host time at 3B.
        return (torch.empty(w.shape, dtype=torch.int8, device="meta"),
                torch.empty(w.shape[:-1], dtype=torch.float32, device="meta"))
    n, k = w.shape[-2:]
    lead = math.prod(w.shape[:-2])
    slices = w.reshape(lead, n, k)  # merges the leading dims only: a view for every layout the loader passes
    q = torch.empty(slices.shape, dtype=torch.int8, device=w.device)
    scale = torch.empty(slices.shape[:2], dtype=torch.float32, device=w.device)
    if k == 0:
        return q.reshape(w.shape), scale.zero_().reshape(w.shape[:-1])
    step = max(1, _PASS_ELEMENTS // k)
    for i in range(slices.shape[0]):
        for r0 in range(0, n, step):
            rows = slices[i, r0:r0 + step]
            if rows.dtype.itemsize > 4:  # float64: rounded to float32 first, as the codes are computed there
                rows = rows.float()
            # max|x| as max(max x, -min x): two reductions of w's own dtype and no |w| copy;
            # exact in any float dtype, NaN propagates, and abs_ clears the sign of a -0 row.
            s = torch.maximum(rows.amax(dim=-1), rows.amin(dim=-1).neg()).float().abs_() / QMAX
            # Division rather than a product with 1/s: 1/s overflows for subnormal scales. Where
            # rounding leaves max/s a hair above 127, the clamp keeps it in range (still within
            # half a step). Dividing the stored dtype by float32 scales computes in float32
            # without a float32 copy of the rows first.
            safe = torch.where(s > 0, s, torch.ones_like(s))[:, None]
            codes = torch.div(rows, safe).round_().clamp_(-QMAX, QMAX)
            q[i, r0:r0 + step].copy_(codes)  # the float -> int8 cast happens in the copy
            scale[i, r0:r0 + step] = s
    return q.reshape(w.shape), scale.reshape(w.shape[:-1])


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q * scale as `dtype` (tests and the quality figures; the engine never keeps one)."""
    wide = torch.promote_types(dtype, torch.float32)
    return (q.to(wide) * scale[..., None].to(wide)).to(dtype)


def int8_linear(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, out_dtype: torch.dtype | None = None,
                kernel: bool = False) -> torch.Tensor:
    """(x @ q.T) * scale in `out_dtype` (default x's); x [..., K], q int8 [N, K], scale float32 [N].
    `kernel`: through gemv.py (at most gemv.MAX_ROWS rows, where Triton runs)."""
    out_dtype = out_dtype or x.dtype
    if kernel:
        if out_dtype == x.dtype:
            return gemv.linear_int8(x, q, scale)
        return gemv.matvec(x, q, out_dtype, scale=scale)
    # One weight widened for this one product and dropped (never the whole model). int8
    # values are exact in bf16 and fp16; the scale is applied to the float32 sums.
    # (torch._weight_int8pack_mm, which reads int8 directly on CPU and MPS, returned garbage
    # for bf16 at small shapes and crashed the process at others in torch 2.13: not used.)
    y = F.linear(x, q.to(x.dtype))
    wide = torch.promote_types(y.dtype, torch.float32)
    return (y.to(wide) * scale.to(wide)).to(out_dtype)


class Int8Linear(nn.Module):
    """A bias-free nn.Linear stored as int8 rows and float32 per-row scales (buffers: they
    are data, not trainable parameters; `_apply` keeps the scales float32 under `.to(dtype)`)."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        if q.dtype != torch.int8 or q.dim() != 2 or scale.shape != q.shape[:1]:
            raise ValueError(f"Int8Linear needs an int8 [N, K] weight and [N] scales; got {q.dtype} "
                             f"{tuple(q.shape)} and {tuple(scale.shape)}")
        self.register_buffer("weight_q", q)
        self.register_buffer("scale", scale.float())

    @property
    def in_features(self) -> int:
        return self.weight_q.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight_q.shape[0]

    @classmethod
    def from_linear(cls, layer: nn.Linear | torch.Tensor) -> "Int8Linear":
        w = layer.weight if isinstance(layer, nn.Linear) else layer
        return cls(*quantize_rows(w.detach()))

    def _apply(self, fn, recurse=True):
        # model.to(bfloat16) must not round the scales: where `fn` cast them, the original
        # float32 values are kept (only moved to where `fn` put them).
        scale = self.scale
        super()._apply(fn, recurse)
        if self.scale.dtype != torch.float32:
            self.scale = scale.to(self.scale.device)
        return self

    def forward(self, x: torch.Tensor, out_dtype: torch.dtype | None = None, kernel: bool = False) -> torch.Tensor:
        return int8_linear(x, self.weight_q, self.scale, out_dtype, kernel)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-row scales"


def quantize_model(model) -> "nn.Module":
    """Replace a fused HeartMuLa's streamed matrices by Int8Linear, in place; each float
    weight is dropped as soon as its int8 copy exists. Works on the meta device too (the
    loader builds the quantized structure there, then adopts the checkpoint's int8 tensors)."""
    if model.audio_head is not None:
        raise RuntimeError("quantize_model needs a fused model: call fuse_projections first")
    if getattr(model, "quant", "none") == "int8":
        return model
    for llama in (model.backbone, model.decoder):
        for layer in llama.layers:
            attn, mlp = layer.attn, layer.mlp
            attn.wqkv = Int8Linear.from_linear(attn.wqkv)
            attn.output_proj = Int8Linear.from_linear(attn.output_proj)
            mlp.w13 = Int8Linear.from_linear(mlp.w13)
            mlp.w2 = Int8Linear.from_linear(mlp.w2)
    model.projection = Int8Linear.from_linear(model.projection)
    model.codebook0_head = Int8Linear.from_linear(model.codebook0_head)
    heads = model.audio_head_t
    model.audio_head_t = None
    model.audio_heads = nn.ModuleList(Int8Linear.from_linear(heads[i]) for i in range(heads.shape[0]))
    del heads
    model.quant = "int8"
    if model.gemv:  # keep the kernels on for the new modules
        model.use_gemv(blocks=model.backbone.layers[0].attn.matvec)
    return model


def fused_int8_state(state: dict) -> dict[str, torch.Tensor]:
    """Checkpoint names -> a quantized, fused model's names. `state` holds (q, scale) pairs
    for the QUANTIZED names (audio_head already as [K-1, vocab, ddim] rows) and tensors for
    the rest. q/k/v and w1/w3 rows are stacked as int8, with their scales.

    `state` is emptied as it is read, and each stack is made as soon as its parts are all
    there, so the unstacked parts never coexist with all the stacks (~1.3 GB at 3B)."""
    out: dict[str, torch.Tensor] = {}
    groups = {"attn.q_proj": ("attn.wqkv", 0, 3), "attn.k_proj": ("attn.wqkv", 1, 3),
              "attn.v_proj": ("attn.wqkv", 2, 3), "mlp.w1": ("mlp.w13", 0, 2), "mlp.w3": ("mlp.w13", 1, 2)}
    stacks: dict[str, dict[int, tuple]] = {}
    for name in list(state):
        value = state.pop(name)
        if not isinstance(value, tuple):
            out[name] = value
            continue
        q, scale = value
        m = re.match(r"^(.*\.layers\.\d+)\.(attn\.\w+|mlp\.\w+)\.weight$", name)
        if m and m.group(2) in groups:
            fused, index, parts = groups[m.group(2)]
            base = f"{m.group(1)}.{fused}"
            stack = stacks.setdefault(base, {})
            stack[index] = (q, scale)
            del q, scale, value
            if len(stack) == parts:
                done = stacks.pop(base)
                ordered = [done[i] for i in range(parts)]
                # w1/w3 in the feed-forward's own layout (gemv.stack_gate_up), q/k/v one after another
                stack = (lambda ts: gemv.stack_gate_up(*ts)) if fused == "mlp.w13" else torch.cat
                out[f"{base}.weight_q"] = stack([q for q, _ in ordered])
                out[f"{base}.scale"] = stack([s for _, s in ordered])
                del ordered, done, stack
        elif name == "audio_head":
            for i in range(q.shape[0]):
                out[f"audio_heads.{i}.weight_q"], out[f"audio_heads.{i}.scale"] = q[i], scale[i]
        else:
            base = name[: -len(".weight")]
            out[f"{base}.weight_q"], out[f"{base}.scale"] = q, scale
    if stacks:  # check_keys has run before: a missing part is a bug here, not a bad file
        raise RuntimeError(f"incomplete q/k/v or w1/w3 stacks: {sorted(stacks)}")
    return out


def int8_bytes(model) -> int:
    """Bytes of the int8 matrices and their scales (0 for an unquantized model)."""
    return sum(m.weight_q.numel() + 4 * m.scale.numel() for m in model.modules() if isinstance(m, Int8Linear))
