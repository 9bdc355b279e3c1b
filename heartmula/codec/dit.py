"""The flow-matching velocity estimator of HeartCodec: a two-stage DiT.

Stage 1 runs `n_layer` Llama-style blocks at width `dim = n_head * head_dim`; its output
is concatenated with the raw input and projected to twice the width for stage 2
(`n_layer_2` blocks, heads twice as wide). Every block is modulated by the flow time
through adaptive layer norm (shift, scale and gate for attention and MLP, PixArt-alpha
"adaLN-single": one time MLP per stage, plus a learned per-block table).

Parameter names equal the official checkpoint's (`flow_matching.estimator.*`), so
loading needs no renames here.

Precision: the sub-layers (attention, MLP, projections) run in the weights' dtype
(float32, bfloat16 or float16). The residual stream, the norms, RoPE and the time
modulation stay float32: they are cheap, and they are where low precision hurts
(the gate/scale products and the sum over 30 residual additions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# Parameters kept in float32 whatever the compute dtype (see the module docstring).
FP32_PARAM_MARKERS = ("adaln_single", "scale_shift_table", "norm.weight")

TIME_EMBED_DIM = 512  # size of the sinusoidal flow-time encoding
TIME_SCALE = 1000.0  # t in [0, 1] is scaled like a diffusion step in [0, 1000]
NORM_EPS = 1e-6
ROPE_BASE = 10000.0


@dataclass(frozen=True)
class DiTArgs:
    in_channels: int  # x (out_channels) + in-context latents (out_channels) + condition (dim)
    out_channels: int  # latent width (256: two stereo streams of 128)
    n_head: int
    head_dim: int
    n_layer: int  # stage-1 blocks at dim
    n_layer_2: int  # stage-2 blocks at 2 * dim

    @property
    def dim(self) -> int:
        return self.n_head * self.head_dim


def mlp_hidden_dim(dim: int, multiple_of: int = 256) -> int:
    """Llama's SwiGLU width: 2/3 of 4*dim, rounded up to a multiple of 256 (1536 -> 4096)."""
    hidden = int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return self.weight.float() * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rope_table(seq_len: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [seq_len, head_dim // 2] in float32 for positions 0..seq_len-1."""
    inv_freq = 1.0 / ROPE_BASE ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [B, H, T, D]. The rotation pairs adjacent channels (2i, 2i+1), not two halves.
    x2 = x.float().unflatten(-1, (-1, 2))
    a, b = x2[..., 0], x2[..., 1]
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.flatten(-2).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, dim: int, n_head: int, head_dim: int):
        super().__init__()
        self.n_head, self.head_dim = n_head, head_dim
        inner = n_head * head_dim
        self.q_proj = nn.Linear(dim, inner, bias=False)
        self.k_proj = nn.Linear(dim, inner, bias=False)
        self.v_proj = nn.Linear(dim, inner, bias=False)
        self.o_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # x: [B, T, dim] in the compute dtype; full (non-causal) self-attention
        q, k, v = (p(x).unflatten(-1, (self.n_head, self.head_dim)).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.o_proj(out.transpose(1, 2).flatten(2))


class MLP(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        hidden = mlp_hidden_dim(dim)
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def block_forward(block: "Block", x: torch.Tensor, time_mod: torch.Tensor,
                  rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """One DiT block. A free function so that one compiled version serves every block of a
    width (see `DiT.compile_blocks`): the float32 modulation, norms and residuals around
    the matrix products are many small kernels eagerly and a few fused ones compiled."""
    # x: [B, T, dim] float32; time_mod: [B or 1, 6, dim] float32
    mod = (block.scale_shift_table.float() + time_mod).unsqueeze(2)  # [B, 6, 1, dim]
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mod.unbind(1)
    dtype = block.attn.q_proj.weight.dtype
    h = block.attn((block.attn_norm(x) * (1 + scale_a) + shift_a).to(dtype), rope)
    x = x + gate_a * h.float()
    h = block.mlp((block.mlp_norm(x) * (1 + scale_m) + shift_m).to(dtype))
    return x + gate_m * h.float()


class Block(nn.Module):
    def __init__(self, dim: int, n_head: int, head_dim: int):
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = Attention(dim, n_head, head_dim)
        self.mlp_norm = RMSNorm(dim)
        self.mlp = MLP(dim)
        self.scale_shift_table = nn.Parameter(torch.zeros(6, dim))
        self.forward_fn = block_forward  # DiT.compile_blocks swaps in a compiled one

    def forward(self, x: torch.Tensor, time_mod: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.forward_fn(self, x, time_mod, rope)


class ProjectLayer(nn.Module):
    """Conv1d (kernel 3, 'same' padding) then Linear, over [B, T, C]."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3):
        super().__init__()
        self.kernel_size = kernel_size
        self.ffn_1 = nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2)
        self.ffn_2 = nn.Linear(c_out, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.ffn_1.weight.dtype)
        x = self.ffn_1(x.transpose(1, 2)).transpose(1, 2) * self.kernel_size ** -0.5
        return self.ffn_2(x).float()


class _TimestepMLP(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(TIME_EMBED_DIM, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class _TimeEmbedder(nn.Module):
    # Only a container: it makes the names `emb.timestep_embedder.*` match the checkpoint.
    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = _TimestepMLP(dim)


class AdaNormSingle(nn.Module):
    """Flow time t [B] -> (per-block modulation [B, 6, dim], final-norm embedding [B, dim])."""

    def __init__(self, dim: int):
        super().__init__()
        self.emb = _TimeEmbedder(dim)
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, t_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.linear.weight
        emb = self.emb.timestep_embedder(t_features.to(w.dtype))
        mod = self.linear(F.silu(emb))
        return mod.float().unflatten(-1, (6, -1)), emb.float()


def timestep_features(t: torch.Tensor) -> torch.Tensor:
    """Sinusoidal encoding of the flow time: t [B] float32 -> [B, 512] = [cos | sin]."""
    half = TIME_EMBED_DIM // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None] * TIME_SCALE
    return torch.cat([args.cos(), args.sin()], dim=-1)


TimeCond = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class DiT(nn.Module):
    """velocity = DiT(concat[x_t, in-context latents, condition] [B, T, in_channels], t [B])."""

    def __init__(self, args: DiTArgs):
        super().__init__()
        self.args = args
        dim, dim_2 = args.dim, 2 * args.dim
        self.proj_in = ProjectLayer(args.in_channels, dim)
        self.transformer_blocks = nn.ModuleList(Block(dim, args.n_head, args.head_dim) for _ in range(args.n_layer))
        self.transformer_blocks_2 = nn.ModuleList(
            Block(dim_2, args.n_head, 2 * args.head_dim) for _ in range(args.n_layer_2)
        )
        self.connection_proj = ProjectLayer(args.in_channels + dim, dim_2)
        self.scale_shift_table = nn.Parameter(torch.zeros(2, dim))
        self.scale_shift_table_2 = nn.Parameter(torch.zeros(2, dim_2))
        self.proj_out = ProjectLayer(dim_2, args.out_channels)
        self.adaln_single = AdaNormSingle(dim)
        self.adaln_single_2 = AdaNormSingle(dim_2)
        self._rope_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def compile_blocks(self, **kwargs) -> "DiT":
        """torch.compile the blocks (one compiled function for all; parameters are inputs)."""
        import torch._dynamo

        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        fn = torch.compile(block_forward, fullgraph=True, **kwargs)
        for block in [*self.transformer_blocks, *self.transformer_blocks_2]:
            block.forward_fn = fn
        return self

    def time_conditioning(self, t: torch.Tensor) -> TimeCond:
        """Everything the blocks need from t [B]; it does not depend on x, so the Euler
        loop computes it for all steps before it starts."""
        feats = timestep_features(t)
        return (*self.adaln_single(feats), *self.adaln_single_2(feats))

    def _rope(self, seq_len: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (seq_len, head_dim, str(device))
        if key not in self._rope_cache:
            self._rope_cache[key] = rope_table(seq_len, head_dim, device)
        return self._rope_cache[key]

    def forward(self, h: torch.Tensor, t: torch.Tensor | None = None, cond: TimeCond | None = None) -> torch.Tensor:
        # h: [B, T, in_channels]; t: [B] flow time, or `cond` = time_conditioning(t). Returns float32 [B, T, out].
        if cond is None:
            if t is None:
                raise ValueError("DiT.forward needs the flow time `t` or its `cond`")
            cond = self.time_conditioning(t)
        mod_1, emb_1, mod_2, emb_2 = cond
        seq_len = h.shape[1]
        s = self.proj_in(h)
        rope = self._rope(seq_len, self.args.head_dim, h.device)
        for block in self.transformer_blocks:
            s = block(s, mod_1, rope)
        s = _modulated_layer_norm(s, self.scale_shift_table, emb_1)

        x = self.connection_proj(torch.cat([h.float(), s], dim=-1))
        rope = self._rope(seq_len, 2 * self.args.head_dim, h.device)
        for block in self.transformer_blocks_2:
            x = block(x, mod_2, rope)
        x = _modulated_layer_norm(x, self.scale_shift_table_2, emb_2)
        return self.proj_out(x)


def _modulated_layer_norm(x: torch.Tensor, table: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    # x: [B, T, D] float32, table: [2, D] (shift, scale), emb: [B or 1, D]
    shift, scale = (table.float() + emb[:, None]).unsqueeze(2).unbind(1)
    return F.layer_norm(x, (x.shape[-1],), eps=NORM_EPS) * (1 + scale) + shift
