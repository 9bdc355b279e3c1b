"""HeartCodec decoding: frames (8 codes each, 12.5 Hz) -> 48 kHz stereo.

    codes [8, T] --residual VQ--> [T, 512] --cond_feature_emb, 2x nearest--> 25 Hz condition
      --flow matching: Euler over t in [0, 1] with the DiT velocity (CFG batch [uncond, cond])-->
      latents [2T, 256] --split 128 | 128 = left | right--> scalar decoder --> [2, T * 3840]

Long songs are decoded in windows of 372 frames (29.76 s) every 320 frames. Each window
after the first is conditioned on the previous window's last 52 frames of latents (its
"in-context" part) and the audio of two windows is crossfaded linearly over those 52
frames (4.16 s). The song is first padded to a whole number of windows by repeating it
from its start, as the reference does, and the output is cut back to T * 3840 samples.

Random numbers: every decode draws its noise in the reference's order and shapes (a
discarded [1, 744, 256] "first latent", the first window's start noise, then per later
window a discarded [1, 640, 256] padding and the window's start noise), in float32 on the
generator's device (the CPU for the default, torch's global generator). So after
torch.manual_seed(s) a CPU float32 decode equals the reference's `detokenize` exactly,
and on any device the noise does not depend on the device.

The output length is T * 3840 samples for T frames (80 ms each), for any T >= 1. The
reference gives the same except when (T - 104) % 320 == 0 and T > 372 (T = 424, 744, ...):
its padding test compares with the overlap in latent frames (104) instead of code frames
(52), skips the padding and drops the last 52 frames of audio. We pad in that case too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..audio import N_CHANNELS, N_CODEBOOKS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ..checkpoint import CheckpointError, check_keys, load_state_dict, read_json
from .dit import FP32_PARAM_MARKERS, DiT, DiTArgs
from .scalar import ScalarDecoder, ScalarDecoderArgs, fold_weight_norm

# Windowing (reference `detokenize` with duration 29.76 s), in frames at 12.5 Hz.
WINDOW_FRAMES = 372  # int(29.76 * 12.5)
HOP_FRAMES = 320  # WINDOW_FRAMES // 93 * 80
OVERLAP_FRAMES = WINDOW_FRAMES - HOP_FRAMES  # 52 frames = 4.16 s conditioned on and crossfaded
LATENTS_PER_FRAME = 2  # latents run at 25 Hz
WINDOW_LATENTS = WINDOW_FRAMES * LATENTS_PER_FRAME  # 744
OVERLAP_LATENTS = OVERLAP_FRAMES * LATENTS_PER_FRAME  # 104
OVERLAP_SAMPLES = OVERLAP_FRAMES * SAMPLES_PER_FRAME  # 199680
HOP_SAMPLES = HOP_FRAMES * SAMPLES_PER_FRAME  # 1228800
WINDOW_SAMPLES = WINDOW_FRAMES * SAMPLES_PER_FRAME  # 1428480

INCONTEXT_NOISE_KEEP = 1 - 1e-6  # in-context frames at time t: (1 - 0.999999 t) noise + t latents

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# Checkpoint entries that generation does not need: the scalar codec's encoder and the
# residual VQ's training-time EMA statistics.
IGNORED_PREFIXES = ("scalar_model.encoder.",)
IGNORED_KEY = re.compile(r"flow_matching\.vq_embed\.layers\.\d+\._codebook\.(cluster_size|embed_avg|initted)")

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class CodecConfig:
    """The fields of HeartCodec-oss/config.json that decoding uses (defaults: the official codec)."""

    dim: int = 512  # RVQ / condition width
    codebook_size: int = 8192
    codebook_dim: int = 32
    num_quantizers: int = 8
    attention_head_dim: int = 64
    num_attention_heads: int = 24
    in_channels: int = 1024  # DiT input: 2 * out_channels + dim
    out_channels: int = 256  # latent width: 2 stereo streams of latent_hidden_dim
    num_layers: int = 24
    num_layers_2: int = 6
    norm_type: str = "ada_norm_single"
    sample_rate: int = SAMPLE_RATE
    causal: bool = True
    num_samples: int = 2
    num_bands: int = 1
    upsample_factors: tuple[int, ...] = (5, 4, 4, 4, 3)
    upsample_kernel_sizes: tuple[int, ...] = (10, 8, 8, 8, 6)
    latent_hidden_dim: int = 128
    default_kernel_size: int = 7
    delay_kernel_size: int = 5
    init_channel: int = 64
    res_kernel_size: int = 7

    @classmethod
    def from_dict(cls, data: dict, where: str = "codec config") -> CodecConfig:
        kwargs = {}
        for f in fields(cls):
            if f.name in data:
                value = data[f.name]
                kwargs[f.name] = tuple(value) if isinstance(value, list) else value
        config = cls(**kwargs)
        config.validate(where)
        return config

    @classmethod
    def from_json(cls, path: str | Path) -> CodecConfig:
        return cls.from_dict(read_json(path), where=str(path))

    def validate(self, where: str) -> None:
        problems = []
        if self.norm_type != "ada_norm_single":
            problems.append(f"norm_type {self.norm_type!r} (only 'ada_norm_single' is supported)")
        if self.num_bands != 1:
            problems.append(f"num_bands {self.num_bands} (only 1 is supported)")
        if self.num_quantizers != N_CODEBOOKS:
            problems.append(f"num_quantizers {self.num_quantizers} (HeartMuLa frames have {N_CODEBOOKS} codes)")
        if self.out_channels != N_CHANNELS * self.latent_hidden_dim:
            problems.append(f"out_channels {self.out_channels} != 2 * latent_hidden_dim {self.latent_hidden_dim}")
        if self.in_channels != 2 * self.out_channels + self.dim:
            problems.append(f"in_channels {self.in_channels} != 2 * out_channels + dim = {2 * self.out_channels + self.dim}")
        hop = math.prod(self.upsample_factors) * self.num_samples
        if hop * LATENTS_PER_FRAME != SAMPLES_PER_FRAME or self.sample_rate != SAMPLE_RATE:
            problems.append(f"upsampling x{hop} at {self.sample_rate} Hz (need x{SAMPLES_PER_FRAME // LATENTS_PER_FRAME} "
                            f"at {SAMPLE_RATE} Hz)")
        if problems:
            raise CheckpointError(f"{where}: unsupported HeartCodec config: " + "; ".join(problems))

    @property
    def dit_args(self) -> DiTArgs:
        return DiTArgs(in_channels=self.in_channels, out_channels=self.out_channels,
                       n_head=self.num_attention_heads, head_dim=self.attention_head_dim,
                       n_layer=self.num_layers, n_layer_2=self.num_layers_2)

    @property
    def scalar_args(self) -> ScalarDecoderArgs:
        return ScalarDecoderArgs(
            latent_dim=self.latent_hidden_dim, init_channel=self.init_channel,
            upsample_factors=tuple(self.upsample_factors), upsample_kernel_sizes=tuple(self.upsample_kernel_sizes),
            num_samples=self.num_samples, default_kernel_size=self.default_kernel_size,
            delay_kernel_size=self.delay_kernel_size, res_kernel_size=self.res_kernel_size, causal=self.causal)


class ResidualVQ(nn.Module):
    """Decoding half of the residual VQ: codes -> sum of one codebook row per quantizer -> project_out.

    `codebooks` [Q, K, d] stacks the checkpoint's `layers.{q}._codebook.embed` [1, K, d].
    `project_in` (dim -> d) is only used to encode; it is loaded so the weights stay whole.
    """

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int, num_quantizers: int):
        super().__init__()
        self.codebooks = nn.Parameter(torch.zeros(num_quantizers, codebook_size, codebook_dim))
        self.project_in = nn.Linear(dim, codebook_dim)
        self.project_out = nn.Linear(codebook_dim, dim)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        # codes: [B, Q, T] int -> [B, T, dim]
        q_index = torch.arange(codes.shape[1], device=codes.device)[None, :, None]
        rows = self.codebooks[q_index, codes]  # [B, Q, T, d]
        return self.project_out(rows.sum(dim=1))


class FlowMatching(nn.Module):
    """`flow_matching` of the checkpoint: the code condition and the velocity estimator."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.vq_embed = ResidualVQ(config.dim, config.codebook_size, config.codebook_dim, config.num_quantizers)
        self.cond_feature_emb = nn.Linear(config.dim, config.dim)
        # The condition of latent frames past the codes' end. Windows always cover their
        # codes exactly (744 latents for 372 frames), so decoding never needs it.
        self.zero_cond_embedding1 = nn.Parameter(torch.zeros(config.dim))
        self.estimator = DiT(config.dit_args)

    def condition(self, codes: torch.Tensor) -> torch.Tensor:
        # codes: [B, Q, T] -> float32 [B, 2T, dim], each frame's vector repeated (nearest 2x)
        features = self.cond_feature_emb(self.vq_embed.decode(codes))
        return features.repeat_interleave(LATENTS_PER_FRAME, dim=1)


def euler_schedule(num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, dt) float32 [num_steps] of the reference's Euler loop, including its float32
    rounding: t_{k+1} = t_k + dt_k and dt_{k+1} = linspace[k+2] - t_{k+1}."""
    grid = torch.linspace(0, 1, num_steps + 1, dtype=torch.float32)
    ts, dts = [grid[0]], [grid[1] - grid[0]]
    for k in range(1, num_steps):
        ts.append(ts[-1] + dts[-1])
        dts.append(grid[k + 1] - ts[-1])
    return torch.stack(ts), torch.stack(dts)


@dataclass
class _Take:
    """One song being decoded: its padded codes, pre-drawn noise and crossfade state."""

    codes: torch.Tensor  # [Q, n_windows * HOP + OVERLAP] on the model device
    noise: list[torch.Tensor]  # per window: [WINDOW_LATENTS, out_channels] float32 (CPU)
    target_samples: int
    emitted: int = 0
    prev_latents: torch.Tensor | None = None  # [WINDOW_LATENTS, out_channels] of the last window
    audio_tail: np.ndarray | None = None  # [2, OVERLAP_SAMPLES] not final until crossfaded
    total_windows: int | None = None  # None while the song is still being generated (StreamDecoder)
    frames: np.ndarray | None = None  # [n, 8] so far, while total_windows is None

    @property
    def n_windows(self) -> int:
        return len(self.noise) if self.total_windows is None else self.total_windows


def pad_codes(codes: torch.Tensor) -> torch.Tensor:
    """[Q, T] -> [Q, n_windows * 320 + 52]: repeat the song from its start, as the reference does
    (first to one window, then to whole hops)."""
    length = codes.shape[-1]
    if length < WINDOW_FRAMES:
        codes = codes[:, torch.arange(WINDOW_FRAMES) % length]
        length = WINDOW_FRAMES
    n_windows = math.ceil((length - OVERLAP_FRAMES) / HOP_FRAMES)
    padded = n_windows * HOP_FRAMES + OVERLAP_FRAMES
    if padded != length:
        codes = codes[:, torch.arange(padded) % length]
    return codes


def unchanged_samples(first_changed_frame: int) -> int:
    """How many leading samples of a song's audio cannot change when its frames change from
    `first_changed_frame` on (same codec noise): those of the windows that end before that
    frame, up to where the first window holding it starts to be crossfaded in."""
    first_window = max(0, math.ceil((first_changed_frame - WINDOW_FRAMES + 1) / HOP_FRAMES))
    return first_window * HOP_FRAMES * SAMPLES_PER_FRAME


def n_windows_for(n_frames: int) -> int:
    """How many windows a song of n_frames frames is decoded in."""
    return math.ceil((max(n_frames, WINDOW_FRAMES) - OVERLAP_FRAMES) / HOP_FRAMES)


def stream_chunks(n_frames: int) -> list[tuple[int, int]]:
    """The chunks `StreamDecoder` hands out for a take of n_frames frames, in order: for each,
    (the frame its audio ends at, how many frames must exist before it can be decoded). A
    window is final once the song has run past it; the last one only once the song has ended."""
    k = n_windows_for(n_frames)
    return [(min((j + 1) * HOP_FRAMES, n_frames) if j < k - 1 else n_frames,
             min(j * HOP_FRAMES + WINDOW_FRAMES + 1, n_frames) if j < k - 1 else n_frames) for j in range(k)]


def window_noise(w: int, latent_dim: int, generator: torch.Generator | None) -> torch.Tensor:
    """Window w's start noise, drawn next from `generator` in the reference's order: window 0
    after the reference's `first_latent`, each later one after its in-context padding (both
    drawn, then masked out). Drawing windows 0, 1, ... in turn gives `draw_noise`'s list."""
    device = generator.device if generator is not None else torch.device("cpu")

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=device, dtype=torch.float32)

    randn(1, WINDOW_LATENTS if w == 0 else WINDOW_LATENTS - OVERLAP_LATENTS, latent_dim)
    return randn(1, WINDOW_LATENTS, latent_dim)[0]


def draw_noise(n_windows: int, latent_dim: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """The start noise of each window, drawn in the reference's order (see the module docstring)."""
    return [window_noise(w, latent_dim, generator) for w in range(n_windows)]


class HeartCodec(nn.Module):
    """The HeartCodec-oss decoder. Build with `load_codec`; parameter names equal the checkpoint's
    except the stacked RVQ codebooks and the folded weight-norm convolutions."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = config
        self.flow_matching = FlowMatching(config)
        self.scalar_model = ScalarDecoder(config.scalar_args)
        # Captured Euler solves by (input shapes, in-context latents, steps, guidance); None
        # while graphs are off (see use_graphs).
        self._graphs: dict[tuple, tuple] | None = None
        self._graph_pool = None

    @property
    def device(self) -> torch.device:
        return self.flow_matching.cond_feature_emb.weight.device

    def compile(self) -> "HeartCodec":
        """Compile the estimator's blocks (first decode of each batch size compiles)."""
        self.flow_matching.estimator.compile_blocks()
        return self

    def use_graphs(self, on: bool = True) -> "HeartCodec":
        """Replay each window's Euler solve (every estimator call of the window) as one CUDA
        graph. A window is thousands of small kernel launches, and on a slow or busy host
        launching them takes longer than running them (docs/performance.md, run 17). One
        graph per batch of takes, for the first window and the later ones; the scalar
        decoder stays eager (the last window's length varies). CUDA only."""
        if on and self.device.type != "cuda":
            raise ValueError(f"codec graphs need a CUDA device; the codec is on {self.device}")
        self._graphs = {} if on else None
        self._graph_pool = torch.cuda.graph_pool_handle() if on else None  # one memory pool for all
        return self

    def _solve(self, x0: torch.Tensor, incontext: torch.Tensor, n_incontext: int, mu: torch.Tensor,
               schedule: tuple, guidance_scale: float) -> torch.Tensor:
        if self._graphs is None:
            return self._solve_euler(x0, incontext, n_incontext, mu, *schedule, guidance_scale)
        from ..accel.graphs import capture_graph

        key = (tuple(x0.shape), tuple(mu.shape), n_incontext, len(schedule[2]), guidance_scale)
        with torch.cuda.device(self.device):
            if key not in self._graphs:
                static = (x0.clone(), incontext.clone(), mu.clone())
                graph, out = capture_graph(
                    lambda: self._solve_euler(static[0], static[1], n_incontext, static[2], *schedule, guidance_scale),
                    pool=self._graph_pool, capture_error_mode="thread_local")  # the language model may run meanwhile
                # A replay reads the addresses captured: keep this call's schedule alive with it.
                self._graphs[key] = (graph, static, out, schedule)
            graph, static, out, _ = self._graphs[key]
            for buffer, value in zip(static, (x0, incontext, mu)):
                buffer.copy_(value)
            graph.replay()
            return out.clone()  # the next replay rewrites `out`

    # ---- checkpoint names ----------------------------------------------------------------

    def checkpoint_shapes(self) -> dict[str, torch.Size]:
        """Every key (and shape) that the official checkpoint must hold for this config,
        derived from the modules, minus the deliberately ignored ones."""
        shapes: dict[str, torch.Size] = {}
        weight_normed = self._weight_normed_params()
        for name, p in self.named_parameters():
            if name == "flow_matching.vq_embed.codebooks":
                for q in range(p.shape[0]):
                    shapes[f"flow_matching.vq_embed.layers.{q}._codebook.embed"] = torch.Size((1, *p.shape[1:]))
            elif name in weight_normed:
                stem = name[: -len(".weight")]
                shapes[f"{stem}.parametrizations.weight.original0"] = torch.Size((p.shape[0],) + (1,) * (p.dim() - 1))
                shapes[f"{stem}.parametrizations.weight.original1"] = p.shape
            else:
                shapes[name] = p.shape
        return shapes

    def _weight_normed_params(self) -> set[str]:
        return {f"{name}.weight" for name, m in self.named_modules() if getattr(m, "weight_norm", False)}

    def convert_checkpoint(self, state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
        """Check the checkpoint's keys and turn them into this module's state dict (folded
        weights and codebooks in float32, the rest in the dtype they came in)."""
        state = {k: v for k, v in state.items() if not IGNORED_KEY.fullmatch(k)}
        check_keys(state, self.checkpoint_shapes(), where, ignore_prefixes=IGNORED_PREFIXES)
        out: dict[str, torch.Tensor] = {}
        n_q = self.config.num_quantizers
        weight_normed = self._weight_normed_params()
        for name, p in self.named_parameters():
            if name == "flow_matching.vq_embed.codebooks":
                out[name] = torch.stack([state[f"flow_matching.vq_embed.layers.{q}._codebook.embed"][0]
                                         for q in range(n_q)]).float()
            elif name in weight_normed:
                stem = name[: -len(".weight")]
                out[name] = fold_weight_norm(state[f"{stem}.parametrizations.weight.original0"],
                                             state[f"{stem}.parametrizations.weight.original1"])
            else:
                out[name] = state[name]  # in its dtype: load_codec casts (streamed, it is cast already)
            state.pop(name, None)  # each tensor held once: converted, the checkpoint's goes
        return out

    # ---- decoding ------------------------------------------------------------------------

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor | np.ndarray, *, num_steps: int = 10, guidance_scale: float = 1.25,
               generator: torch.Generator | None = None, on_progress: ProgressFn | None = None) -> np.ndarray:
        """codes [8, T] -> float32 [2, T * 3840] at 48 kHz (see the module docstring).

        guidance_scale > 1 runs classifier-free guidance (estimator batch [uncond, cond]);
        <= 1 runs the conditional estimate only, as the reference does. `generator` (any
        device) draws the noise; None uses torch's global CPU generator, so
        torch.manual_seed(s) reproduces the reference. `on_progress(done_windows, total_windows)`
        is called after each window."""
        chunks = list(self.decode_stream(codes, num_steps=num_steps, guidance_scale=guidance_scale,
                                         generator=generator, on_progress=on_progress))
        return np.concatenate(chunks, axis=1)

    def decode_stream(self, codes: torch.Tensor | np.ndarray, *, num_steps: int = 10, guidance_scale: float = 1.25,
                      generator: torch.Generator | None = None,
                      on_progress: ProgressFn | None = None) -> Iterator[np.ndarray]:
        """Like `decode`, but yields float32 [2, n] chunks as soon as each is final (the audio
        of window k is final once window k+1 has been crossfaded into it). The noise is drawn
        when the iteration starts."""
        self._check_decode_options(num_steps, guidance_scale)
        take = self._new_take(codes, generator, "codes")
        for _, chunk in self._run([take], num_steps, guidance_scale, on_progress):
            yield chunk

    @torch.inference_mode()
    def decode_batch(self, codes_list: Sequence[torch.Tensor | np.ndarray], *, num_steps: int = 10,
                     guidance_scale: float = 1.25, generators: Sequence[torch.Generator | None] | None = None,
                     max_batch: int = 4, on_progress: ProgressFn | None = None) -> list[np.ndarray]:
        """Decode several takes, up to `max_batch` at a time through the estimator.

        Take i draws its noise from generators[i] (the global generator when None), in take
        order, so the result equals decoding the takes one by one with the same generators
        (up to float rounding of batched matrix products). `on_progress(done, total)` counts
        windows over all takes, from (0, total) as decoding begins."""
        self._check_decode_options(num_steps, guidance_scale)
        if generators is not None and len(generators) != len(codes_list):
            raise ValueError(f"decode_batch: {len(generators)} generators for {len(codes_list)} takes")
        if max_batch < 1:
            raise ValueError(f"decode_batch: max_batch must be >= 1, got {max_batch}")
        total = sum(n_windows_for(np.shape(c)[-1]) for c in codes_list)
        if on_progress is not None:  # decoding has begun (the first window takes a while)
            on_progress(0, total)
        done = 0
        outputs: list[np.ndarray] = []
        for start in range(0, len(codes_list), max_batch):
            group = [self._new_take(codes_list[i], generators[i] if generators else None, f"codes_list[{i}]")
                     for i in range(start, min(start + max_batch, len(codes_list)))]
            pieces: list[list[np.ndarray]] = [[] for _ in group]
            group_done = done

            def progress(d: int, _total: int) -> None:
                if on_progress is not None:
                    on_progress(group_done + d, total)

            for i, chunk in self._run(group, num_steps, guidance_scale, progress):
                pieces[i].append(chunk)
            done += sum(t.n_windows for t in group)
            outputs += [np.concatenate(p, axis=1) for p in pieces]
        return outputs

    # ---- internals -----------------------------------------------------------------------

    @staticmethod
    def _check_decode_options(num_steps: int, guidance_scale: float) -> None:
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
        if not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")

    def _new_take(self, codes: torch.Tensor | np.ndarray, generator: torch.Generator | None, what: str) -> _Take:
        codes = torch.as_tensor(np.asarray(codes) if not isinstance(codes, torch.Tensor) else codes)
        if codes.dim() != 2 or codes.shape[0] != self.config.num_quantizers or codes.shape[1] < 1:
            hint = " (frames first? pass codes.T)" if codes.dim() == 2 and codes.shape[1] == self.config.num_quantizers else ""
            raise ValueError(f"{what}: expected codes of shape [{self.config.num_quantizers}, T>=1], "
                             f"got {tuple(codes.shape)}{hint}")
        if codes.is_floating_point() or codes.is_complex():
            raise ValueError(f"{what}: codes must be integers, got {codes.dtype}")
        codes = codes.to("cpu", torch.int64)
        low, high = int(codes.min()), int(codes.max())  # one check per decode, before any GPU work
        if low < 0 or high >= self.config.codebook_size:
            raise ValueError(f"{what}: codes must lie in [0, {self.config.codebook_size}), found {low}..{high} "
                             "(audio end / padding ids must be cut off before decoding)")
        n_frames = codes.shape[1]
        padded = pad_codes(codes)
        noise = draw_noise(n_windows_for(n_frames), self.config.out_channels, generator)
        assert padded.shape[1] == len(noise) * HOP_FRAMES + OVERLAP_FRAMES
        return _Take(codes=padded.to(self.device), noise=noise, target_samples=n_frames * SAMPLES_PER_FRAME,
                     total_windows=len(noise))

    def _run(self, takes: list[_Take], num_steps: int, guidance_scale: float,
             on_progress: ProgressFn | None) -> Iterator[tuple[int, np.ndarray]]:
        """Decode takes window by window; yield (take index, final audio chunk) in time order.

        Inference mode is entered per window, never across a `yield` (it would leak into
        the caller's code between chunks)."""
        with torch.inference_mode():
            schedule = self._prepare_schedule(num_steps)
        total = sum(t.n_windows for t in takes)
        done = 0
        for w in range(max(t.n_windows for t in takes)):
            with torch.inference_mode():
                chunks = self._decode_window(takes, w, schedule, guidance_scale)
            for i, chunk in chunks:
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
                if chunk.shape[1]:
                    yield i, chunk

    def _prepare_schedule(self, num_steps: int) -> tuple:
        device = self.device
        t_steps, dt_steps = euler_schedule(num_steps)
        t_steps, dt_steps = t_steps.to(device), dt_steps.to(device)
        estimator = self.flow_matching.estimator
        # The time conditioning depends only on t: one batched call for all steps.
        conds = estimator.time_conditioning(t_steps)
        step_conds = [tuple(c[k : k + 1] for c in conds) for k in range(num_steps)]
        return t_steps, dt_steps, step_conds

    def _decode_window(self, takes: list[_Take], w: int, schedule: tuple,
                       guidance_scale: float) -> list[tuple[int, np.ndarray]]:
        """Window w of every take that has one, batched through the estimator."""
        active = [i for i, t in enumerate(takes) if t.n_windows > w]
        start = w * HOP_FRAMES
        codes = torch.stack([takes[i].codes[:, start : start + WINDOW_FRAMES] for i in active])
        mu = self.flow_matching.condition(codes).float()  # [B, 744, dim]
        x0 = torch.stack([takes[i].noise[w] for i in active]).to(self.device)
        incontext = torch.zeros_like(x0)
        n_incontext = 0 if w == 0 else OVERLAP_LATENTS
        if n_incontext:
            incontext[:, :n_incontext] = torch.stack([takes[i].prev_latents[-n_incontext:] for i in active])
        latents = self._solve(x0, incontext, n_incontext, mu, schedule, guidance_scale)
        latents[:, :n_incontext] = incontext[:, :n_incontext]
        out = []
        for row, i in enumerate(active):
            # The scalar decoder runs one take at a time: at 48 kHz its activations are the
            # largest tensors of the whole decode.
            take = takes[i]
            take.prev_latents = latents[row]
            # Only the last window can end past the song; its audio beyond is never used.
            n_samples = min(WINDOW_SAMPLES, take.target_samples - w * HOP_SAMPLES)
            audio = self._latents_to_audio(latents[row], max(n_samples, OVERLAP_SAMPLES if w else 1))
            chunk = self._crossfade(take, audio, last=take.total_windows is not None and w == take.total_windows - 1)
            chunk = chunk[:, : max(0, take.target_samples - take.emitted)]
            take.emitted += chunk.shape[1]
            out.append((i, chunk))
        return out

    def _solve_euler(self, x: torch.Tensor, incontext: torch.Tensor, n_incontext: int, mu: torch.Tensor,
                     t_steps: torch.Tensor, dt_steps: torch.Tensor, step_conds: list, guidance_scale: float,
                     ) -> torch.Tensor:
        # x, incontext: [B, 744, 256] float32; mu: [B, 744, dim]. No host sync inside the loop:
        # the schedule and the time conditioning are device tensors computed beforehand.
        estimator = self.flow_matching.estimator
        noise, x = x, x.clone()
        guided = guidance_scale > 1.0
        if guided:  # classifier-free guidance: rows [unconditional (zero condition), conditional]
            static = torch.cat([torch.cat([incontext, incontext]), torch.cat([torch.zeros_like(mu), mu])], dim=-1)
        else:
            static = torch.cat([incontext, mu], dim=-1)
        for k in range(len(step_conds)):
            t, dt = t_steps[k], dt_steps[k]
            if n_incontext:
                x[:, :n_incontext] = (1 - INCONTEXT_NOISE_KEEP * t) * noise[:, :n_incontext] + t * incontext[:, :n_incontext]
            # float32 in: the estimator casts for its own projections and keeps the raw input
            # float32 where it concatenates it again (connection_proj).
            h = torch.cat([torch.cat([x, x]) if guided else x, static], dim=-1)
            v = estimator(h, cond=step_conds[k])
            if guided:
                v_uncond, v_cond = v.chunk(2)
                v = v_uncond + guidance_scale * (v_cond - v_uncond)
            x = x + dt * v
        return x

    def _latents_to_audio(self, latents: torch.Tensor, n_samples: int) -> torch.Tensor:
        """latents [744, 256] -> float32 [2, >= n_samples]; channels 0..127 are left, 128..255 right.

        The scalar decoder is causal but for a look-ahead of 2 latents, so the first
        n_samples need only the latents up to there (plus the look-ahead): a short song,
        or the last window of a long one, skips decoding the padding."""
        lookahead = self.scalar_model.lookahead
        hop = self.scalar_model.args.hop_length
        if lookahead is not None:
            latents = latents[: -(-n_samples // hop) + lookahead]
        streams = latents.float().unflatten(-1, (N_CHANNELS, -1)).permute(1, 2, 0)  # [2, 128, n]
        return self.scalar_model.decode(streams)[:, 0]

    @staticmethod
    def _crossfade(take: _Take, audio: torch.Tensor, last: bool) -> np.ndarray:
        """Blend this window's start into the previous window's tail; return what is now final."""
        audio = audio.cpu().numpy()[:, :WINDOW_SAMPLES]
        if take.audio_tail is not None:
            # Linear fade in float64, as the reference (its window comes from np.linspace).
            fade_in = np.linspace(0, 1, OVERLAP_SAMPLES)
            blended = take.audio_tail * (1 - fade_in) + audio[:, :OVERLAP_SAMPLES] * fade_in
            audio = np.concatenate([blended.astype(np.float32), audio[:, OVERLAP_SAMPLES:]], axis=1)
        if last:
            take.audio_tail = None
            return audio
        take.audio_tail = audio[:, -OVERLAP_SAMPLES:]
        return audio[:, :-OVERLAP_SAMPLES]


class StreamDecoder:
    """Decodes takes while their frames are still being generated.

    Window w of a song holds only real frames (no padding) once the song has more than
    w * HOP + WINDOW frames, so it can be decoded then; the noise of each take is drawn window
    by window in the same order `decode` draws it, and each window is decoded in the same batch
    of takes (groups of `max_batch`, the takes that have the window) as `decode_batch`
    decodes it. So the chunks of a take, concatenated, are `decode_batch`'s audio of it.

    `feed(frames, finished)` takes every take's frames so far ([n, 8] codes, already clamped
    to the codebook) and which takes have ended; it decodes what has become decodable and
    returns [(take, chunk)] in time order. `finish(frames)` decodes the rest."""

    def __init__(self, codec: "HeartCodec", n_takes: int, *, num_steps: int = 10, guidance_scale: float = 1.25,
                 generators: Sequence[torch.Generator | None] | None = None, max_batch: int = 4,
                 on_window: Callable[[], None] | None = None):
        codec._check_decode_options(num_steps, guidance_scale)
        self.codec, self.guidance_scale, self.on_window = codec, guidance_scale, on_window
        self.generators = list(generators) if generators is not None else [None] * n_takes
        self.takes = [_Take(codes=None, noise=[], target_samples=0) for _ in range(n_takes)]
        self.groups = [list(range(g, min(g + max_batch, n_takes))) for g in range(0, n_takes, max_batch)]
        self.next_window = [0] * len(self.groups)
        with torch.inference_mode():
            self.schedule = codec._prepare_schedule(num_steps)

    def feed(self, frames: Sequence[np.ndarray], finished: Sequence[bool]) -> list[tuple[int, np.ndarray]]:
        for i, (take, f) in enumerate(zip(self.takes, frames)):
            if finished[i] and take.total_windows is None:
                self._close(take, f)
            elif take.total_windows is None:
                take.target_samples = len(f) * SAMPLES_PER_FRAME  # grows; only the last window reads it
                take.frames = f
        out = []
        for g, members in enumerate(self.groups):
            while True:
                w = self.next_window[g]
                ready = [i for i in members if self._has(self.takes[i], w)]
                waiting = [i for i in members if self.takes[i].total_windows is None and not self._has(self.takes[i], w)]
                if waiting or not ready:
                    break
                out += self._decode(ready, w)
                self.next_window[g] += 1
        return out

    def finish(self, frames: Sequence[np.ndarray]) -> list[tuple[int, np.ndarray]]:
        return self.feed(frames, [True] * len(frames))

    def _has(self, take: _Take, w: int) -> bool:
        """Take has window w, and it can be decoded now."""
        if take.total_windows is not None:
            return w < take.total_windows
        return take.frames is not None and len(take.frames) > w * HOP_FRAMES + WINDOW_FRAMES

    def _close(self, take: _Take, frames: np.ndarray) -> None:
        codes = torch.from_numpy(np.ascontiguousarray(frames.T, dtype=np.int64))
        take.codes = pad_codes(codes).to(self.codec.device)
        take.target_samples = len(frames) * SAMPLES_PER_FRAME
        take.total_windows = n_windows_for(len(frames))

    def _decode(self, members: list[int], w: int) -> list[tuple[int, np.ndarray]]:
        takes = []
        for i in members:
            take = self.takes[i]
            if take.total_windows is None:  # open: its real frames up to this window's end
                end = w * HOP_FRAMES + WINDOW_FRAMES
                take.codes = torch.from_numpy(np.ascontiguousarray(take.frames[:end].T, dtype=np.int64)
                                              ).to(self.codec.device)
            while len(take.noise) <= w:
                take.noise.append(window_noise(len(take.noise), self.codec.config.out_channels, self.generators[i]))
            takes.append(take)
        with torch.inference_mode():
            chunks = self.codec._decode_window(takes, w, self.schedule, self.guidance_scale)
        if self.on_window is not None:
            self.on_window()
        return [(members[j], chunk) for j, chunk in chunks if chunk.shape[1]]


def load_codec(folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
               *, streamed: bool | None = None) -> HeartCodec:
    """Load HeartCodec-oss (config.json + safetensors) onto `device`.

    `dtype` is the estimator's compute dtype (float32, bfloat16 or float16); the RVQ, the
    time conditioning, the norms and the scalar decoder stay float32. `streamed` (the default
    off the CPU) reads straight to the device through the language model's reader, a group of
    tensors at a time, each cast as it arrives: the float32 checkpoint never sits whole in
    device memory, and the encoder half (not needed to decode) is dropped as it is read.
    """
    folder = Path(folder)
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(str, SUPPORTED_DTYPES))}, got {dtype}")
    config = CodecConfig.from_json(folder / "config.json")
    with torch.device("meta"):
        model = HeartCodec(config)
    device = torch.device(device)
    normed = {n[: -len(".weight")] for n in model._weight_normed_params()}

    def target_dtype(name: str) -> torch.dtype:
        keep_fp32 = not name.startswith("flow_matching.estimator.") or any(m in name for m in FP32_PARAM_MARKERS)
        return torch.float32 if keep_fp32 else dtype

    def cast(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if name.startswith(IGNORED_PREFIXES) or IGNORED_KEY.fullmatch(name):
            return torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")  # its shape is all that is checked
        if name.rsplit(".parametrizations.", 1)[0] in normed:
            return tensor.float()  # folded in float32 once both halves are here
        return tensor.to(target_dtype(name))

    if streamed if streamed is not None else device.type != "cpu":
        state = load_state_dict(folder, device, streamed=True, convert=cast)
    else:
        state = load_state_dict(folder, "cpu", streamed=False)
    state = model.convert_checkpoint(state, where=str(folder))
    for name, tensor in state.items():
        state[name] = tensor.to(device=device, dtype=target_dtype(name))
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)
