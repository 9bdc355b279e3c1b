"""HeartMuLa: a llama-3.2 style backbone and depth decoder with multi-codebook heads.

Only the modules, their sizes and the static KV cache live here; prompt building,
sampling and the frame loop are in their own modules. Parameter names follow the
official checkpoint exactly, so its state dict loads with no renaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..accel import attention, gemv
from .quant import Int8Linear


@dataclass(frozen=True)
class LlamaArgs:
    n_layer: int
    n_head: int
    n_kv_head: int
    dim: int
    intermediate_dim: int
    max_seq_len: int
    norm_eps: float = 1e-5
    rope_base: float = 500_000.0
    rope_scale_factor: float = 32.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_old_context_len: int = 8192

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head


def _flavor(n_layer, n_head, n_kv_head, dim, intermediate_dim, max_seq_len) -> LlamaArgs:
    return LlamaArgs(n_layer, n_head, n_kv_head, dim, intermediate_dim, max_seq_len)


# The official flavor names of config.json's backbone_flavor / decoder_flavor, plus the
# two tiny test flavors of the golden checkpoints (shared/golden/flavors.json).
FLAVORS: dict[str, LlamaArgs] = {
    "llama-3B": _flavor(28, 24, 8, 3072, 8192, 8192),
    "llama-300M": _flavor(3, 8, 4, 3072, 8192, 2048),
    "llama-400M": _flavor(4, 8, 4, 3072, 8192, 2048),
    "llama-7B": _flavor(32, 32, 8, 4096, 14336, 8192),
    "llama-tiny": _flavor(2, 4, 2, 64, 128, 256),
    "llama-tiny-decoder": _flavor(2, 2, 1, 32, 64, 16),
}


@dataclass(frozen=True)
class HeartMuLaArgs:
    backbone: LlamaArgs
    decoder: LlamaArgs
    text_vocab_size: int = 128_256
    audio_vocab_size: int = 8197  # 8192 codes + specials (audio_eos_id is 8193)
    n_codebooks: int = 8
    muq_dim: int = 512

    @classmethod
    def from_config(cls, config: dict, where: str = "config.json") -> "HeartMuLaArgs":
        """Build from the official config.json: flavor names, or explicit sizes under
        `backbone` / `decoder` keys ({n_layer, n_head, ...}) for unofficial checkpoints."""

        def llama(key: str) -> LlamaArgs:
            spec = config.get(key)
            if isinstance(spec, dict):
                try:
                    return LlamaArgs(**spec)
                except TypeError as e:
                    raise ValueError(f"{where}: bad sizes under {key!r}: {e}") from e
            name = config.get(f"{key}_flavor")
            if name not in FLAVORS:
                raise ValueError(
                    f"{where}: {key}_flavor {name!r} is not a known flavor; known: {', '.join(FLAVORS)}"
                )
            return FLAVORS[name]

        return cls(
            backbone=llama("backbone"),
            decoder=llama("decoder"),
            text_vocab_size=int(config.get("text_vocab_size", 128_256)),
            audio_vocab_size=int(config.get("audio_vocab_size", 8197)),
            n_codebooks=int(config.get("audio_num_codebooks", 8)),
            muq_dim=int(config.get("muq_dim", 512)),
        )


def llama3_inv_freq(args: LlamaArgs, device=None) -> torch.Tensor:
    """RoPE inverse frequencies with Llama-3 long-context scaling ([head_dim/2], float32)."""
    hd = args.head_dim
    freqs = 1.0 / (args.rope_base ** (torch.arange(0, hd, 2, device=device)[: hd // 2].float() / hd))
    low_wavelen = args.rope_old_context_len / args.rope_low_freq_factor
    high_wavelen = args.rope_old_context_len / args.rope_high_freq_factor
    wavelen = 2 * math.pi / freqs
    smooth = (args.rope_old_context_len / wavelen - args.rope_low_freq_factor) / (
        args.rope_high_freq_factor - args.rope_low_freq_factor
    )
    mid = (1 - smooth) * freqs / args.rope_scale_factor + smooth * freqs
    return torch.where(
        wavelen < high_wavelen, freqs, torch.where(wavelen > low_wavelen, freqs / args.rope_scale_factor, mid)
    )


def rope_table(args: LlamaArgs, n_pos: int, device=None) -> torch.Tensor:
    """[n_pos, head_dim/2, 2] float32 (cos, sin) of position * frequency; read as complex
    e^(i * angle) by `apply_rope` when it runs eagerly."""
    inv = llama3_inv_freq(args, device)
    angles = torch.outer(torch.arange(n_pos, device=device, dtype=torch.float32), inv)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    # x: [B, S, H, D]; rope: [S, D/2, 2] (cos, sin). Rotates adjacent pairs (x[2i], x[2i+1]),
    # as the official (torchtune) models were trained, not the two-halves layout. In
    # float32, then back to x's dtype.
    xs = x.float().unflatten(-1, (-1, 2))
    if torch.compiler.is_compiling():
        # Inductor has no complex kernels; in real arithmetic the rotation fuses into the
        # kernel around it.
        cs = rope[None, :, None]
        a, b, cos, sin = xs[..., 0], xs[..., 1], cs[..., 0], cs[..., 1]
        return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2).type_as(x)
    # Eagerly, one complex multiply is one kernel where the real form takes six.
    xc = torch.view_as_complex(xs) * torch.view_as_complex(rope)[None, :, None, :]
    return torch.view_as_real(xc).flatten(-2).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 whatever the weight dtype: bf16 sums of squares lose too much.
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x) * self.scale


class KVCache(nn.Module):
    """Keys and values of every position so far, for one layer: views of the first `batch`
    rows of its layer's store (see `Llama.setup_cache`)."""

    def __init__(self, k_cache: torch.Tensor, v_cache: torch.Tensor):
        super().__init__()
        self.register_buffer("k_cache", k_cache, persistent=False)  # [batch, n_kv_head, positions, head_dim]
        self.register_buffer("v_cache", v_cache, persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        # input_pos: [S] device tensor; k, v: [B, H, S, D]. index_copy_ keeps shapes static.
        self.k_cache.index_copy_(2, input_pos, k)
        self.v_cache.index_copy_(2, input_pos, v)
        return self.k_cache, self.v_cache


SHORT_ATTENTION = 16  # attention lengths (the depth decoder's) taken as elementwise products


def product(layer: nn.Linear | Int8Linear, x: torch.Tensor, matvec: bool) -> torch.Tensor:
    """layer(x); decode steps of at most two rows through gemv.py's kernel when `matvec`
    (set by `HeartMuLa.use_gemv`), which streams the weights faster than cuBLAS there.
    An int8 layer (quant.py) goes through the same kernel reading its int8 bytes."""
    rows = x.numel() // x.shape[-1]
    if matvec and isinstance(layer, Int8Linear) and rows <= gemv.INT8_DECODE_ROWS:
        # Every decode shape (several takes, the depth decoder's 2-position step): torch's
        # path would widen the whole weight each step. Prompt steps stay on it.
        return gemv.linear_int8(x, layer.weight_q, layer.scale)
    if matvec and rows <= 2:
        return gemv.linear(x, layer.weight)
    return layer(x)


class Attention(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = args.n_head, args.n_kv_head, args.head_dim
        self.q_proj = nn.Linear(args.dim, args.n_head * args.head_dim, bias=False)
        self.k_proj = nn.Linear(args.dim, args.n_kv_head * args.head_dim, bias=False)
        self.v_proj = nn.Linear(args.dim, args.n_kv_head * args.head_dim, bias=False)
        self.output_proj = nn.Linear(args.n_head * args.head_dim, args.dim, bias=False)
        self.wqkv: nn.Linear | None = None  # q, k and v stacked, once fuse() has run
        self.kv_cache: KVCache | None = None
        self.matvec = False  # decode products through gemv.py (see `product`)
        self.decode_kernel = False  # decode attention through accel/attention.py (see `HeartMuLa.use_gemv`)

    def fuse(self) -> None:
        """One matrix product instead of three (fewer, larger reads). Changes state_dict names,
        so it runs after loading."""
        w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        self.wqkv = nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
        self.wqkv.weight = nn.Parameter(w, requires_grad=False)
        del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x: torch.Tensor, rope: torch.Tensor, mask: torch.Tensor, input_pos: torch.Tensor,
                attn_len: int) -> torch.Tensor:
        # x: [B, S, dim] (normed) -> the output projection of its attention; writes this
        # step's keys and values to the cache.
        if (x.shape[1] <= 2 and self.decode_kernel and self.wqkv is not None
                and attention.supports(x, self.kv_cache.k_cache)):
            # A decode step in one kernel (accel/attention.py): RoPE, the cache writes and
            # attention over the filled positions only, where the path below takes six. The
            # depth decoder's 8 positions too: with the RoPE and cache kernels gone it beats the
            # short path's one kernel (H200: 3.473 -> 3.426 ms a frame, docs/performance.md).
            qkv = product(self.wqkv, x, self.matvec)
            kv = self.kv_cache
            y = attention.step(qkv, rope, input_pos, kv.k_cache, kv.v_cache, attn_len, self.n_head)
            return product(self.output_proj, y, self.matvec)
        q, k, v = self.qkv(x, rope)
        return self.attend(q, k, v, mask, input_pos, attn_len)

    def qkv(self, x: torch.Tensor, rope: torch.Tensor):
        # x: [B, S, dim] -> q [B, S, H, D], k and v [B, Hkv, S, D], RoPE applied
        b, s, _ = x.shape
        if self.wqkv is not None:
            q, k, v = product(self.wqkv, x, self.matvec).split([self.n_head * self.head_dim] + [self.n_kv_head * self.head_dim] * 2, -1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = apply_rope(q.view(b, s, self.n_head, self.head_dim), rope)
        k = apply_rope(k.view(b, s, self.n_kv_head, self.head_dim), rope).transpose(1, 2)
        v = v.view(b, s, self.n_kv_head, self.head_dim).transpose(1, 2)
        return q, k, v

    def attend(self, q, k, v, mask, input_pos, attn_len):
        # mask: [S, attn_len] bool; input_pos: [S]. Writes k, v to the cache, then attends.
        b, s = q.shape[:2]
        g = self.n_head // self.n_kv_head
        k, v = self.kv_cache.update(input_pos, k, v)
        k, v = k[:, :, :attn_len], v[:, :, :attn_len]  # only the part that can be filled
        # Grouped-query attention without copying the cache per query head: the g query
        # heads that share a kv head (heads kv*g .. kv*g+g-1) become g*S query rows.
        q = q.view(b, s, self.n_kv_head, g, self.head_dim).permute(0, 2, 3, 1, 4).reshape(b, self.n_kv_head, g * s, -1)
        m = mask.expand(g, s, mask.shape[-1]).reshape(g * s, -1)
        if s <= 2 and attn_len <= SHORT_ATTENTION:
            # The depth decoder's few positions: as sums of products, compiled code makes
            # the scores, softmax and weighted sum one kernel instead of two matrix
            # products around a softmax (each of those ~3 µs, 21 times a frame).
            scores = (q.float()[..., None, :] * k.float()[:, :, None]).sum(-1) * self.head_dim**-0.5
            probs = torch.softmax(scores.masked_fill(~m, float("-inf")), dim=-1)
            y = (probs[..., None] * v.float()[:, :, None]).sum(-2).to(v.dtype)
        elif s <= 2:
            # Decode: a handful of query rows against the whole cache. Fused attention
            # kernels tile over queries and leave most of the GPU idle here; two batched
            # matrix-vector products read the cache at full bandwidth instead.
            scores = (q @ k.transpose(-1, -2)).float() * self.head_dim**-0.5
            probs = torch.softmax(scores.masked_fill(~m, float("-inf")), dim=-1)
            y = probs.to(v.dtype) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
        y = y.view(b, self.n_kv_head, g, s, self.head_dim).permute(0, 3, 1, 2, 4).reshape(b, s, -1)
        return product(self.output_proj, y, self.matvec)


class FeedForward(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.intermediate_dim, bias=False)
        self.w2 = nn.Linear(args.intermediate_dim, args.dim, bias=False)
        self.w3 = nn.Linear(args.dim, args.intermediate_dim, bias=False)
        self.w13: nn.Linear | None = None  # w1 and w3 stacked, once fuse() has run
        self.matvec = False  # decode products through gemv.py (see `product`)

    def fuse(self) -> None:
        w = gemv.stack_gate_up(self.w1.weight, self.w3.weight)
        self.w13 = nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
        self.w13.weight = nn.Parameter(w, requires_grad=False)
        del self.w1, self.w3

    def forward(self, x):
        if self.w13 is not None:
            rows, int8 = x.numel() // x.shape[-1], isinstance(self.w13, Int8Linear)
            if self.matvec and gemv.fuses_glu(rows, x.dtype, int8):
                # SwiGLU in the product's epilogue: no kernel of its own
                g = (gemv.linear_int8(x, self.w13.weight_q, self.w13.scale, glu=True) if int8
                     else gemv.linear(x, self.w13.weight, glu=True))
            else:
                a, b = gemv.gate_and_up(product(self.w13, x, self.matvec))
                g = F.silu(a) * b
            return product(self.w2, g, self.matvec)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def block_forward(block: "Block", next_norm: "RMSNorm", x, xn, rope, mask, input_pos, attn_len):
    """One block, given its input x and xn = sa_norm(x): h = x + attn(xn), y = h + mlp(mlp_norm(h)).
    Returns (y, next_norm(y)), next_norm being the next block's sa_norm or the stack's last
    norm, so that compiled, the add ending a block and the norm starting the next are one
    kernel (after the last product the add would otherwise be a kernel of its own). A free
    function so that one compiled version serves every layer (see `HeartMuLa.compile_blocks`)."""
    h = x + block.attn(xn, rope, mask, input_pos, attn_len)
    y = h + block.mlp(block.mlp_norm(h))
    return y, next_norm(y)


class Block(nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.attn = Attention(args)
        self.mlp = FeedForward(args)
        self.sa_norm = RMSNorm(args.dim, args.norm_eps)
        self.mlp_norm = RMSNorm(args.dim, args.norm_eps)
        self.decode_fn = block_forward  # `compile_blocks` swaps in a compiled one


class Llama(nn.Module):
    """A llama decoder without token embeddings or output layer (inputs are vectors)."""

    def __init__(self, args: LlamaArgs):
        super().__init__()
        self.args = args
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layer))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.register_buffer("rope", None, persistent=False)  # [cache_len, head_dim/2, 2]
        self.register_buffer("key_pos", None, persistent=False)  # [cache_len]
        self.cache_len = 0
        self._store: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer: k, v [rows, n_kv_head, cache_len, head_dim]
        self._views: dict[int, list[KVCache]] = {}  # batch -> per layer, the store's first `batch` rows
        self.reserved = (0, 0)  # (rows, positions) the store is never made smaller than (`reserve_cache`)
        self.norm_fn = first_norm  # the first block's sa_norm; `HeartMuLa.compile_blocks` swaps in a compiled one

    def setup_cache(self, batch: int, max_len: int, dtype, device) -> None:
        """Point every layer at KV caches of `batch` rows and at least `max_len` positions.

        The caches are views of one store per layer: a request of no more rows and positions
        than the store holds reuses it (same addresses, so device graphs captured for it stay
        valid, whatever the takes or length). A larger one replaces the store with one of the
        size asked, or of the reserved size where that is larger."""
        if max_len > self.args.max_seq_len:
            raise ValueError(f"cache length {max_len} exceeds the model's {self.args.max_seq_len} positions")
        device = torch.device(device)
        k0 = self._store[0][0] if self._store else None
        if k0 is None or k0.shape[0] < batch or k0.shape[2] < max_len or k0.dtype != dtype or k0.device != device:
            rows, length = max(batch, self.reserved[0]), max(max_len, self.reserved[1])
            self._drop_store()  # before allocating: the old store and the new never coexist
            a = self.args
            shape = (rows, a.n_kv_head, length, a.head_dim)
            self._store = [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
                           for _ in self.layers]
            self.rope = rope_table(a, length, device)
            self.key_pos = torch.arange(length, device=device)
            self.cache_len = length
        if batch not in self._views:
            self._views[batch] = [KVCache(k[:batch], v[:batch]) for k, v in self._store]
        for layer, kv in zip(self.layers, self._views[batch]):
            layer.attn.kv_cache = kv

    def reserve_cache(self, rows: int, positions: int, dtype, device) -> None:
        """Size the store once for the most rows and positions requests will ask, so that none
        of them replaces it (`free_cache` ends the reservation)."""
        self.reserved = (rows, positions)
        self.setup_cache(rows, positions, dtype, device)

    def _drop_store(self) -> None:
        for layer in self.layers:
            layer.attn.kv_cache = None
        self._store, self._views = [], {}
        self.rope = None
        self.key_pos = None
        self.cache_len = 0

    def free_cache(self) -> None:
        self._drop_store()
        self.reserved = (0, 0)

    @property
    def cache_rows(self) -> int:
        """Rows the store holds (0 when there is none)."""
        return self._store[0][0].shape[0] if self._store else 0

    def position_inputs(self, input_pos: torch.Tensor, attn_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(RoPE rows [S, head_dim/2, 2], causal mask [S, attn_len]) of the positions input_pos [S]:
        what `forward` derives each call, for callers whose positions never change."""
        attn_len = attn_len or self.cache_len
        return self.rope[input_pos], self.key_pos[None, :attn_len] <= input_pos[:, None]

    def forward(self, x: torch.Tensor, input_pos: torch.Tensor, attn_len: int | None = None,
                positions: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        # x: [B, S, dim]; input_pos: [S] positions of these S inputs (a device tensor).
        # attn_len: attend to cache positions [0, attn_len) only; it must exceed every
        # input_pos. A static int, so that each length bucket is its own device graph.
        # positions: `position_inputs(input_pos, attn_len)` made beforehand.
        attn_len = attn_len or self.cache_len
        rope, mask = positions if positions is not None else self.position_inputs(input_pos, attn_len)
        # The compiled functions serve the decode shapes only (1 or 2 positions); a prompt of
        # any length stays eager rather than cost a compilation per length.
        decode = x.shape[1] <= 2
        xn = (self.norm_fn if decode else first_norm)(self.layers[0].sa_norm, x)
        next_norms = [layer.sa_norm for layer in self.layers[1:]] + [self.norm]
        for layer, next_norm in zip(self.layers, next_norms):
            x, xn = (layer.decode_fn if decode else block_forward)(layer, next_norm, x, xn, rope, mask, input_pos, attn_len)
        return xn  # the last norm's output: each block returns the next one's normed input


def first_norm(norm: RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """A norm alone (the stack's first, as the blocks apply the others); a free function that
    `HeartMuLa.compile_blocks` compiles into one kernel (eagerly it is three)."""
    return norm(x)


class HeartMuLa(nn.Module):
    """Backbone + depth decoder + the embeddings and heads that bind them to audio codes."""

    def __init__(self, args: HeartMuLaArgs):
        super().__init__()
        self.args = args
        bdim, ddim, vocab = args.backbone.dim, args.decoder.dim, args.audio_vocab_size
        self.backbone = Llama(args.backbone)
        self.decoder = Llama(args.decoder)
        self.text_embeddings = nn.Embedding(args.text_vocab_size, bdim)
        # Codebook k's code c is row k * audio_vocab_size + c.
        self.audio_embeddings = nn.Embedding(vocab * args.n_codebooks, bdim)
        self.unconditional_text_embedding = nn.Embedding(1, bdim)
        self.projection = nn.Linear(bdim, ddim, bias=False)
        self.codebook0_head = nn.Linear(bdim, vocab, bias=False)
        self.audio_head = nn.Parameter(torch.empty(args.n_codebooks - 1, ddim, vocab))
        self.muq_linear = nn.Linear(args.muq_dim, bdim)
        self.gemv = False  # heads and projection through gemv.py's kernel (see use_gemv)
        self.audio_heads: nn.ModuleList | None = None  # the int8 heads, once quant.quantize_model has run
        self.quant = "none"  # "int8" once quant.quantize_model has run

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype activations and KV caches use (the weights' own, int8 aside)."""
        return self.text_embeddings.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.text_embeddings.weight.device

    def setup_caches(self, batch: int, max_len: int) -> None:
        """Caches for `batch` rows and at least `max_len` backbone positions (the depth decoder
        needs only one position per codebook); views of stores kept while they fit."""
        dtype, device = self.compute_dtype, self.device
        self.backbone.setup_cache(batch, max_len, dtype, device)
        self.decoder.setup_cache(batch, self.args.n_codebooks, dtype, device)

    def reserve_caches(self, rows: int, max_len: int) -> None:
        """Caches sized once for up to `rows` rows and `max_len` positions: every request within
        them reuses the same memory (and its device graphs). Ended by `free_caches`."""
        dtype, device = self.compute_dtype, self.device
        self.backbone.reserve_cache(rows, max_len, dtype, device)
        self.decoder.reserve_cache(rows, self.args.n_codebooks, dtype, device)

    def cache_bytes(self, rows: int, max_len: int) -> int:
        """Bytes of the KV caches for `rows` rows and `max_len` backbone positions."""
        size = torch.empty((), dtype=self.compute_dtype).element_size()
        return sum(2 * a.n_layer * rows * a.n_kv_head * n * a.head_dim * size
                   for a, n in ((self.args.backbone, max_len), (self.args.decoder, self.args.n_codebooks)))

    def free_caches(self) -> None:
        self.backbone.free_cache()
        self.decoder.free_cache()

    def audio_offsets(self, device) -> torch.Tensor:
        return torch.arange(self.args.n_codebooks, device=device) * self.args.audio_vocab_size

    def embed_audio(self, codebook: int, codes: torch.Tensor) -> torch.Tensor:
        # codes: [B, 1] -> [B, 1, dim]; codebook k's rows of the table (a view), so no kernel
        # adds the offset to the codes first
        vocab = self.args.audio_vocab_size
        return F.embedding(codes, self.audio_embeddings.weight[codebook * vocab:(codebook + 1) * vocab])

    def fuse_projections(self) -> "HeartMuLa":
        """Stack q/k/v and w1/w3 weights and store the codebook heads as [K-1, vocab, dim]
        rows, the layout matrix-vector kernels read fastest. Run after loading: the
        state_dict names change."""
        for llama in (self.backbone, self.decoder):
            for layer in llama.layers:
                layer.attn.fuse()
                layer.mlp.fuse()
        self.audio_head_t = nn.Parameter(self.audio_head.detach().transpose(1, 2).contiguous(), requires_grad=False)
        del self.audio_head
        self.audio_head = None
        return self

    def codebook0_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Codebook 0's float32 logits from the backbone's last hidden state h [B, bdim]."""
        if isinstance(self.codebook0_head, Int8Linear):
            return self.codebook0_head(h, torch.float32, kernel=self._gemv_rows(h))
        if self._gemv_rows(h):
            return gemv.matvec(h, self.codebook0_head.weight, torch.float32)
        return self.codebook0_head(h).float()

    def audio_logits(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Codebook i+1's float32 logits from the depth decoder's hidden state h [B, ddim]."""
        if self.audio_head is not None:
            return (h @ self.audio_head[i]).float()
        if self.audio_heads is not None:
            return self.audio_heads[i](h, torch.float32, kernel=self._gemv_rows(h))
        if self._gemv_rows(h):
            return gemv.matvec(h, self.audio_head_t[i], torch.float32)
        return F.linear(h, self.audio_head_t[i]).float()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone width -> depth decoder width."""
        # At 4 rows cuBLAS is as fast for this 3072-row matrix (bench --what heads).
        return product(self.projection, x, self.gemv)

    def _gemv_rows(self, x: torch.Tensor) -> bool:
        limit = gemv.INT8_DECODE_ROWS if self.quant == "int8" else gemv.MAX_ROWS
        return self.gemv and x.numel() // x.shape[-1] <= limit

    def use_gemv(self, blocks: bool = True) -> "HeartMuLa":
        """Run the heads and projection of decode steps, and with `blocks` the blocks'
        2-row products and decode attention, through gemv.py's and attention.py's kernels;
        call after `fuse_projections`, where `device.triton_kernels_available` says they run."""
        if self.audio_head is not None:
            raise RuntimeError("use_gemv needs the [K-1, vocab, dim] heads: call fuse_projections first")
        self.gemv = True
        for llama in (self.backbone, self.decoder):
            for layer in llama.layers:
                layer.attn.matvec = layer.mlp.matvec = layer.attn.decode_kernel = blocks
        return self

    def compile_blocks(self, **kwargs) -> "HeartMuLa":
        """torch.compile the decode step of every block: norms, RoPE, the cache write,
        SiLU and residuals fuse into few kernels around the matrix products. All layers
        share one compiled function (parameters are its inputs), and the attention length
        becomes dynamic after the first bucket, so a model costs a few compilations."""
        import torch._dynamo

        # Shapes that vary: rows (takes), positions (1 or 2), attention length (buckets),
        # and backbone vs decoder heads; each costs one compilation at most.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        fn = torch.compile(block_forward, fullgraph=True, **kwargs)
        norm = torch.compile(first_norm, fullgraph=True, **kwargs)
        for llama in (self.backbone, self.decoder):
            llama.norm_fn = norm
            for layer in llama.layers:
                layer.decode_fn = fn
        return self
