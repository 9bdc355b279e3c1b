"""HeartCodec's scalar (SQ) codec decoder: 25 Hz latents -> 48 kHz waveform, one channel.

    latent [B, 128, T] -> round to 9 levels -> look-ahead conv (k=5, centred)
      -> 5 x (causal transposed conv, stride 5,4,4,4,3; 5 dilated residual units 1,3,5,7,9)
      -> repeat each sample twice, causal conv, PReLU -> causal conv to 1 channel
    = [B, 1, T * 1920]

The activations are PReLU (one slope per layer). The reference file also defines a Snake
activation, but its decoder never uses it, so there is none here.

In the checkpoint most convolutions are weight-normed (`parametrizations.weight.original0`
= g, `original1` = v). They are folded into plain weights, w = g * v / ||v||, when the
checkpoint is loaded (`fold_weight_norm`), so decoding runs plain convolutions. Modules
whose checkpoint weight is weight-normed carry `weight_norm = True`, which is how the
loader knows which keys to expect. Module and parameter names equal the checkpoint's
(`scalar_model.decoder.*`); the encoder half of the checkpoint is not needed to generate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

RESIDUAL_DILATIONS = (1, 3, 5, 7, 9)
SQ_LEVELS = 9  # the encoder quantizes its tanh output to round(9 x) / 9
# Latent steps decoded at a time (~7.7 s of audio). At 48 kHz the last stages hold 64 channels,
# ~3 MB a latent step in float32 per stream: a 30 s window's 744 steps held ~2.2 GB at once, a
# third of a low-memory song's peak. In chunks of 192 (+ 44 steps of context each, ~23 % more
# decoder work) they hold ~0.7 GB.
CHUNK_LATENTS = 192


@dataclass(frozen=True)
class ScalarDecoderArgs:
    latent_dim: int = 128  # latent_hidden_dim
    init_channel: int = 64  # width after the last upsampling stage (doubles per stage before it)
    upsample_factors: tuple[int, ...] = (5, 4, 4, 4, 3)
    upsample_kernel_sizes: tuple[int, ...] = (10, 8, 8, 8, 6)
    num_samples: int = 2  # final repeat-upsampling factor
    default_kernel_size: int = 7
    delay_kernel_size: int = 5
    res_kernel_size: int = 7
    causal: bool = True

    @property
    def hop_length(self) -> int:
        """Output samples per latent step (1920 = 5*4*4*4*3*2)."""
        return math.prod(self.upsample_factors) * self.num_samples


class Conv1d(nn.Conv1d):
    """A Conv1d that is causal (left padding only) or centred ('same' length)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int = 1, causal: bool = True,
                 weight_norm: bool = False):
        reach = dilation * (kernel_size - 1)
        super().__init__(c_in, c_out, kernel_size, dilation=dilation, padding=0 if causal else reach // 2)
        self.left_pad = reach if causal else 0
        self.weight_norm = weight_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left_pad, 0)) if self.left_pad else x)


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """Upsample by `stride` with kernel 2*stride; trimming the last `stride` outputs makes
    it causal and gives exactly T * stride samples."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int):
        if kernel_size != 2 * stride:
            raise ValueError(f"causal upsampling needs kernel_size == 2 * stride, got {kernel_size} and {stride}")
        super().__init__(c_in, c_out, kernel_size, stride=stride)
        self.weight_norm = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[..., : -self.stride[0]]


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int, kernel_size: int, causal: bool):
        super().__init__()
        self.conv1 = Conv1d(channels, channels, kernel_size, dilation=dilation, causal=causal, weight_norm=True)
        self.conv2 = Conv1d(channels, channels, 1, causal=causal, weight_norm=True)
        self.activation1 = nn.PReLU()
        self.activation2 = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.activation2(self.conv2(self.activation1(self.conv1(x))))


class _Upsample(nn.Module):
    # A container so that the checkpoint's `up_conv.layer.*` names fit.
    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int):
        super().__init__()
        self.layer = CausalConvTranspose1d(c_in, c_out, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class DecoderBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, kernel_size: int, res_kernel_size: int, causal: bool):
        super().__init__()
        self.up_conv = _Upsample(c_in, c_out, kernel_size, stride)
        self.convs = nn.ModuleList(ResidualUnit(c_out, d, res_kernel_size, causal) for d in RESIDUAL_DILATIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up_conv(x)
        for unit in self.convs:
            x = unit(x)
        return x


class PostProcessor(nn.Module):
    """Repeat every sample `num_samples` times, then a plain (not weight-normed) conv and PReLU."""

    def __init__(self, channels: int, num_samples: int, kernel_size: int, causal: bool):
        super().__init__()
        self.num_samples = num_samples
        self.conv = Conv1d(channels, channels, kernel_size, causal=causal)
        self.activation = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.conv(x.repeat_interleave(self.num_samples, dim=-1)))


class ScalarDecoder(nn.Module):
    """`scalar_model` of the checkpoint, decoder half."""

    def __init__(self, args: ScalarDecoderArgs):
        super().__init__()
        self.args = args
        n_up = len(args.upsample_factors)
        widths = [args.init_channel * 2 ** (n_up - i) for i in range(n_up + 1)]  # 2048 ... 64
        # The first conv looks ahead (centred, not causal): the reference builds it so.
        layers: list[nn.Module] = [
            Conv1d(args.latent_dim, widths[0], args.delay_kernel_size, causal=False, weight_norm=True)
        ]
        for i, (factor, kernel) in enumerate(zip(args.upsample_factors, args.upsample_kernel_sizes)):
            layers.append(DecoderBlock(widths[i], widths[i + 1], factor, kernel, args.res_kernel_size, args.causal))
        if args.num_samples > 1:
            layers.append(PostProcessor(args.init_channel, args.num_samples, args.default_kernel_size, args.causal))
        layers.append(Conv1d(args.init_channel, 1, args.default_kernel_size, causal=args.causal, weight_norm=True))
        self.decoder = nn.ModuleList(layers)

    @property
    def lookahead(self) -> int | None:
        """How many latent steps past t the output samples of step t depend on (the centred
        first conv); None when the decoder is not causal after it."""
        return self.args.delay_kernel_size // 2 if self.args.causal else None

    @property
    def left_context(self) -> int:
        """How many latent steps before t the output samples of step t depend on: a causal
        conv of reach r adds r samples at its rate, a causal transposed conv of stride s turns
        R samples of its output into ceil(R / s) + 1 of its input, and the first conv adds its
        half width."""
        a = self.args
        reach = a.default_kernel_size - 1  # the last conv, at the output rate
        if a.num_samples > 1:  # the post-processor's conv, then its repeat
            reach = -(-(reach + a.default_kernel_size - 1) // a.num_samples)
        residual = sum(d * (a.res_kernel_size - 1) for d in RESIDUAL_DILATIONS)
        for stride in reversed(a.upsample_factors):
            reach = -(-(reach + residual) // stride) + 1
        return reach + a.delay_kernel_size // 2

    def decode(self, latent: torch.Tensor, chunk: int | None = CHUNK_LATENTS) -> torch.Tensor:
        """latent [B, latent_dim, T] -> [B, 1, T * hop_length], `chunk` latent steps at a time
        (None: all at once). Each chunk is decoded with the `left_context` steps before it and
        the look-ahead after it, and only its own samples are kept: the same audio as decoding
        all at once, with the activations of one chunk held instead of all T steps."""
        n = latent.shape[-1]
        if chunk is None or n <= chunk or self.lookahead is None:
            return self._decode(latent)
        hop, context = self.args.hop_length, self.left_context
        out = latent.new_empty(latent.shape[0], 1, n * hop)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            lo, hi = max(0, a - context), min(n, b + self.lookahead)
            out[..., a * hop : b * hop] = self._decode(latent[..., lo:hi])[..., (a - lo) * hop : (b - lo) * hop]
        return out

    def _decode(self, latent: torch.Tensor) -> torch.Tensor:
        x = torch.round(SQ_LEVELS * latent) / SQ_LEVELS  # snap to the encoder's 9 levels
        for layer in self.decoder:
            x = layer(x)
        return x


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """w = g * v / ||v||, the norm over every dim but 0 (torch weight_norm with dim=0)."""
    g, v = g.float(), v.float()
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return v * (g / norm)
