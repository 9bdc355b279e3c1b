"""The frame loop: prompt step, then one `decode_frame` per 80 ms of audio.

The hot loop is shaped for device graphs: every buffer it touches is allocated once
per (batch, cache length), positions and sampling knobs are device tensors updated in
place, and the host looks at the device (end-of-song flags, progress) only every
`SYNC_EVERY` frames.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..audio import FRAME_MS
from ..options import check_options, option
from ..accel import draw
from ..accel.device import synchronize, triton_kernels_available
from .model import HeartMuLa
from .prompt import GenConfig, Prompt
from .sampling import TOPK_CAP, guided_scores, pick_codes, tally_draws, topk_cap_for, topk_threshold, vocab_keys

SYNC_EVERY = 8  # frames between host looks at the device's end-of-song flags and progress (should_stop is polled every frame)
BUCKET = 512  # attention reads cache positions in buckets of this many (see attention_length)
PROGRESS_MIN_INTERVAL_S = 0.25  # on_progress is called at most this often (and at the end)
MAX_TAKES = 8
MAX_SEED = 2**63 - 1  # seeds are int64 on the device


@dataclass(frozen=True)
class GenerateOptions:
    """What a generation request may change. Presets are partial instances of this; each
    field's declaration (heartmula/options.py) is the one place its range, unit and label live."""

    max_audio_length_ms: int = option(
        120_000, "Maximum length", "song length cap; the song may end earlier (80 ms per frame)",
        lo=FRAME_MS, hi=600_000, step=FRAME_MS / 1000, unit="ms", shown_unit="s")
    cfg_scale: float = option(
        1.5, "Guidance (cfg_scale)", "classifier-free guidance; 1.0 turns it off (twice as fast)",
        lo=1.0, hi=10.0, step=0.05, advanced=True)
    temperature: float = option(
        1.0, "Temperature", "sampling temperature for every codebook; lower is safer, higher more varied",
        lo=0.05, hi=5.0, step=0.05, advanced=True)
    topk: int = option(50, "Top-k", "sample among the k most likely codes", lo=1, hi=8192, step=1, advanced=True)
    seed: int | None = option(
        None, "Seed", "the same seed and options give the same song; take i uses seed + i (0 again after the largest)", kind=int,
        lo=0, hi=MAX_SEED, step=1, nullable=True, null_means="a fresh random seed (reported with the song)",
        advanced=True, in_settings=False)
    takes: int = option(1, "Takes", "variations generated together", lo=1, hi=MAX_TAKES, step=1, advanced=True)
    ignore_eos: bool = option(
        False, "Ignore end of song", "always run to the maximum length, even where the song ends (benchmarks)",
        advanced=True)
    codec_steps: int = option(
        10, "Codec steps", "Euler steps of the codec's flow matching: more is slower, maybe cleaner",
        lo=1, hi=100, step=1, advanced=True)
    codec_guidance_scale: float = option(
        1.25, "Codec guidance", "the codec's own guidance scale", lo=1.0, hi=10.0, step=0.05, advanced=True)

    def __post_init__(self):
        check_options(self)

    @property
    def max_frames(self) -> int:
        return self.max_audio_length_ms // FRAME_MS

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0

    @property
    def rows(self) -> int:
        """Batch rows a request runs: one per take, twice that with guidance (the unconditional rows)."""
        return self.takes * (2 if self.guided else 1)


@dataclass(frozen=True)
class Progress:
    phase: str  # "prompt", "frames" or "decode"
    done: int  # frames (or decode windows) done
    total: int
    elapsed_s: float
    per_s: float  # frames per second of one take (windows per second when decoding)
    eta_s: float | None  # None until a rate is known


@dataclass(frozen=True)
class FramesSoFar:
    """What the frame loop has made, handed to `on_frames` at its sync points (device tensors:
    copy what you need; reading them waits for the device)."""

    frames: torch.Tensor  # [takes, total, K]; frames[:, :n] are made
    n: int
    lengths: torch.Tensor  # [takes]: a take that ended keeps its frames before the end code
    ended: torch.Tensor  # [takes] bool


@dataclass(frozen=True)
class FramesResult:
    frames: list[np.ndarray]  # per take: [n_frames, n_codebooks] int64; frame 0 is the prompt step's
    seeds: list[int]  # take i's seed
    prompt_len: int
    prompt_s: float  # time of the prompt step (device synced)
    frames_s: float  # time of the frame loop after it
    steps: int  # decode_frame calls made
    stopped: bool = False  # True when should_stop ended the run early
    ended: list[bool] = field(default_factory=list)  # take i reached its end-of-song code

    @property
    def frames_per_s(self) -> float:
        """Steps per second: frames of one take per second (the rate that sets the ETA)."""
        return self.steps / self.frames_s if self.frames_s > 0 else 0.0


class StepBuffers:
    """Device buffers the loop reuses every frame (allocated by `setup`)."""

    def __init__(self, model: HeartMuLa, takes: int, guided: bool, compiled: bool = False,
                 topk_cap: int | None = TOPK_CAP, audit: bool = False):
        dev = model.device
        k = model.args.n_codebooks
        self.takes, self.guided, self.topk_cap = takes, guided, topk_cap
        self.rows = takes * (2 if guided else 1)
        self.codes = torch.zeros(self.rows, k, dtype=torch.long, device=dev)  # the last frame
        self.input_pos = torch.zeros(1, dtype=torch.long, device=dev)
        self.temperature = torch.ones((), device=dev)
        self.topk = torch.ones((), dtype=torch.long, device=dev)
        self.cfg_scale = torch.ones((), device=dev)
        self.seeds = torch.zeros(takes, dtype=torch.long, device=dev)
        self.offsets = model.audio_offsets(dev)  # codebook k's rows start at k * vocab
        self.keys = vocab_keys(model.args.audio_vocab_size, dev)
        self.dec_pos = [torch.tensor([0, 1], device=dev)] + [torch.tensor([i], device=dev) for i in range(2, k)]
        # The depth decoder's positions are the same every frame: their RoPE rows and masks once.
        self.dec_inputs = ([model.decoder.position_inputs(p) for p in self.dec_pos] if model.decoder.rope is not None
                           else [None] * len(self.dec_pos))  # no caches yet: each step derives them
        self.n_codebooks = k
        # Where Triton runs, a codebook's codes come from one kernel (accel/draw.py). Elsewhere
        # sampling is ~40 small integer and float ops, which compiled make a couple of kernels.
        self.draw_kernel = triton_kernels_available(dev)
        # audit: every draw is also checked against the scores it came from (sampling.tally_draws)
        self.tally = torch.zeros(3, dtype=torch.long, device=dev) if audit else None
        fn = (lambda f: torch.compile(f, dynamic=False, fullgraph=True)) if compiled else (lambda f: f)
        if audit:
            self.scores, self.threshold = fn(guided_scores), fn(topk_threshold)
        if not self.draw_kernel:
            self.pick = fn(pick_codes)

    def set_request(self, opts: GenerateOptions, seeds: list[int]) -> None:
        self.temperature.fill_(float(opts.temperature))
        self.topk.fill_(min(int(opts.topk), self.keys.numel()))  # k beyond the vocabulary keeps all
        self.cfg_scale.fill_(float(opts.cfg_scale))
        self.seeds.copy_(torch.tensor(seeds, dtype=torch.long))


def _pick(logits: torch.Tensor, buf: StepBuffers, codebook: int) -> torch.Tensor:
    """Codebook `codebook`'s codes [rows] from its logits, drawn with the counter
    input_pos * n_codebooks + codebook."""
    if buf.draw_kernel:
        codes = draw.draw_codes(logits, buf.cfg_scale, buf.temperature, buf.topk, buf.seeds, buf.input_pos,
                                buf.n_codebooks, codebook, buf.guided)
    else:
        counter = buf.input_pos * buf.n_codebooks + codebook
        codes = buf.pick(logits, buf.cfg_scale, buf.temperature, buf.topk, buf.seeds, counter, buf.keys, buf.guided,
                         buf.topk_cap)
    if buf.tally is not None:  # the audit: torch's own threshold, whichever path drew
        scores = buf.scores(logits, buf.cfg_scale, buf.temperature, buf.guided)
        tally_draws(scores, buf.threshold(scores, buf.topk, buf.topk_cap), codes[: buf.takes], buf.tally)
    return codes


def depth_frame(model: HeartMuLa, last_h: torch.Tensor, buf: StepBuffers) -> torch.Tensor:
    """The backbone's last hidden state -> one frame of codes [rows, n_codebooks].

    Codebook 0 comes from the backbone's head; the depth decoder then predicts
    codebooks 1..K-1 one at a time, restarting at position 0 every frame.
    """
    k = model.args.n_codebooks
    code = _pick(model.codebook0_logits(last_h), buf, 0)
    out = [code]
    x = model.project(torch.stack([last_h, model.embed_audio(0, code[:, None])[:, 0]], dim=1))
    for i in range(1, k):
        h = model.decoder(x, buf.dec_pos[i - 1], positions=buf.dec_inputs[i - 1])[:, -1]
        logits = model.audio_logits(i - 1, h)
        code = _pick(logits, buf, i)
        out.append(code)
        if i < k - 1:
            x = model.project(model.embed_audio(i, code[:, None]))
    return torch.stack(out, dim=1)


def prefill(model: HeartMuLa, prompt: Prompt, buf: StepBuffers, kept: torch.Tensor | None = None) -> torch.Tensor:
    """The prompt step: every prompt row through the backbone, then frame 0 [rows, K].

    With `kept` ([takes, F, K] codes of frames already made), those frames follow the prompt
    as rows at the positions the frame loop gave them, in the same one step, and the frame
    drawn is frame F: a song continues exactly as a longer run of it would have."""
    h = prompt_inputs(model, prompt, buf, kept)
    input_pos = torch.arange(h.shape[1], device=h.device)
    last_h = model.backbone(h, input_pos)[:, -1]
    buf.input_pos.fill_(h.shape[1] - 1)
    return depth_frame(model, last_h, buf)


def prompt_inputs(model: HeartMuLa, prompt: Prompt, buf: StepBuffers, kept: torch.Tensor | None = None) -> torch.Tensor:
    """The backbone's inputs of the prompt step [rows, L (+ F), dim]: the prompt's rows, and
    the kept frames' summed embeddings after them (see `prefill`)."""
    dev = buf.codes.device
    tokens = torch.from_numpy(prompt.tokens).to(dev).expand(buf.rows, -1, -1)  # [rows, L, K+1]
    mask = torch.from_numpy(prompt.mask).to(dev)  # [L, K+1]
    dtype = model.compute_dtype
    text = model.text_embeddings(tokens[..., -1])  # [rows, L, dim]
    muq = model.muq_linear(torch.zeros(model.args.muq_dim, device=dev, dtype=dtype))  # no reference audio
    muq = muq.expand(buf.rows, -1).clone()
    if buf.guided:  # the unconditional rows see only the learned "no text" embedding
        uncond = model.unconditional_text_embedding.weight[0]
        text = torch.cat([text[: buf.takes], uncond.expand_as(text[buf.takes :])])
        muq[buf.takes :] = uncond
    audio = model.audio_embeddings(tokens[..., :-1] + buf.offsets)  # [rows, L, K, dim]
    h = (torch.cat([audio, text[:, :, None]], dim=2) * mask[None, :, :, None]).sum(dim=2)
    h[:, prompt.muq_idx] = muq
    if kept is not None and kept.shape[1]:
        rows = kept.repeat(2, 1, 1) if buf.guided else kept  # both rows of a take saw its frames
        h = torch.cat([h, model.audio_embeddings(rows + buf.offsets).sum(dim=2)], dim=1)  # as decode_frame sums
    return h


def decode_frame(model: HeartMuLa, buf: StepBuffers, attn_len: int | None = None) -> torch.Tensor:
    """One step: the previous frame (buf.codes) at buf.input_pos -> the next frame [rows, K].

    No host sync, no Python branch on tensor values, no state change outside buffers:
    this is the function a device graph captures (one graph per `attn_len` bucket).
    """
    x = model.audio_embeddings(buf.codes + buf.offsets).sum(dim=1, keepdim=True)  # [rows, 1, dim]
    last_h = model.backbone(x, buf.input_pos, attn_len)[:, -1]
    return depth_frame(model, last_h, buf)


def attention_length(pos: int, cache_len: int, bucket: int = BUCKET) -> int:
    """How much of the cache the step at `pos` attends to: the end of pos's bucket.

    Reading the whole cache every frame would make long songs slow down; one length per
    bucket keeps shapes static (one device graph each). Eager and graph steps use the
    same lengths, so they run the same arithmetic and make the same frames."""
    return min(cache_len, (pos // bucket + 1) * bucket)


def eager_step(model: HeartMuLa, buf: StepBuffers, pos: int) -> torch.Tensor:
    return decode_frame(model, buf, attention_length(pos, model.backbone.cache_len))


def cache_length(prompt_len: int, max_frames: int, model_max: int) -> int:
    """Backbone positions needed, rounded up to whole attention buckets: then a step's
    attention length is its bucket's end whatever the cache's size (a reserved cache, an
    extension's longer one), so the same request makes the same frames in any of them."""
    need = prompt_len + max_frames
    return min(model_max, -(-need // BUCKET) * BUCKET)


def check_fits(prompt_len: int, opts: GenerateOptions, model_max: int, kept_frames: int = 0) -> None:
    """The prompt, the kept frames and the new ones must fit the backbone's positions."""
    if kept_frames and kept_frames >= opts.max_frames:
        raise ValueError(
            f"the song already has {kept_frames * FRAME_MS / 1000:.2f} s; ask for a longer max_audio_length_ms "
            f"than {kept_frames * FRAME_MS} to add to it")
    if prompt_len + opts.max_frames > model_max:
        room_ms = max(0, model_max - prompt_len) * FRAME_MS
        more = (f" (the kept {kept_frames * FRAME_MS / 1000:.2f} s plus at most "
                f"{max(0, room_ms - kept_frames * FRAME_MS) / 1000:.2f} s more)" if kept_frames else "")
        raise ValueError(
            f"the prompt takes {prompt_len} of the model's {model_max} positions, which leaves room for "
            f"{room_ms / 1000:.1f} s of audio{more}, but {opts.max_audio_length_ms / 1000:g} s "
            f"(max_audio_length_ms={opts.max_audio_length_ms}) was asked; shorten the lyrics or the length"
        )


def fresh_seed() -> int:
    """A random seed, as a request with none gets (short enough to read out and type again)."""
    return secrets.randbelow(2**31)


def take_seeds(opts: GenerateOptions) -> list[int]:
    base = opts.seed if opts.seed is not None else fresh_seed()
    return [(base + i) % (MAX_SEED + 1) for i in range(opts.takes)]


@torch.inference_mode()
def generate_frames(
    model: HeartMuLa,
    prompt: Prompt,
    gen: GenConfig,
    opts: GenerateOptions,
    *,
    buffers: StepBuffers | None = None,
    step: Callable[[HeartMuLa, StepBuffers, int], torch.Tensor] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    kept: np.ndarray | None = None,
    on_frames: Callable[[FramesSoFar], None] | None = None,
) -> FramesResult:
    """Run the prompt step and the frame loop for every take of `opts`.

    `kept` ([takes, F, K] int64): frames already made (extend a song, or regenerate it from
    frame F); they are returned first, and the loop draws frames F.. with the same keys a
    single longer run uses, so the result equals that run.

    `buffers` must match (takes, guidance) and the model's caches must be set up for
    it. `step(model, buf, pos)` makes the frame at host-known position `pos`: eager
    `decode_frame` by default, or a captured-graph replay of it (see graphs.py).
    """
    step = step or eager_step
    buf = buffers or StepBuffers(model, opts.takes, opts.guided, topk_cap=topk_cap_for(opts.topk))
    if (buf.takes, buf.guided) != (opts.takes, opts.guided) or (buf.topk_cap or opts.topk) < opts.topk:
        raise ValueError("step buffers were set up for another number of takes, guidance or top-k bound")
    dev = buf.codes.device
    seeds = take_seeds(opts)
    buf.set_request(opts, seeds)
    n, total = opts.takes, opts.max_frames
    stop = should_stop or (lambda: False)

    t0 = time.perf_counter()
    if on_progress:
        on_progress(Progress("prompt", 0, total, 0.0, 0.0, None))
    k = model.args.n_codebooks
    first = 0 if kept is None else int(kept.shape[1])  # the first frame this run draws
    if kept is not None and (kept.ndim != 3 or kept.shape[0] != n or kept.shape[2] != k or first >= total):
        raise ValueError(f"kept frames must be [{n}, F < {total}, {k}], got {list(kept.shape)}")
    frames = torch.zeros(n, total, k, dtype=torch.long, device=dev)
    lengths = torch.full((n,), total, dtype=torch.long, device=dev)
    ended = torch.zeros(n, dtype=torch.bool, device=dev)
    kept_t = None
    if first:
        kept_t = torch.from_numpy(np.ascontiguousarray(kept, dtype=np.int64)).to(dev)
        frames[:, :first] = kept_t
    frame0 = prefill(model, prompt, buf, kept_t)
    frames[:, first] = frame0[:n]
    buf.codes.copy_(frame0)
    synchronize(dev)
    t1 = time.perf_counter()
    prompt_s = t1 - t0

    steps, stopped, last_report, t = 0, stop(), 0.0, first  # a stop during the prompt step ends here
    for t in range(first + 1, total if not stopped else first + 1):
        buf.input_pos.add_(1)
        codes = step(model, buf, len(prompt) + t - 1)
        frames[:, t] = codes[:n]
        if not opts.ignore_eos:
            # End of song when any code of a take's conditional row is an end code; that
            # frame is dropped. Flags stay on the device until the next look.
            hit = (codes[:n] >= gen.audio_eos_id).any(dim=1) & ~ended
            lengths.masked_fill_(hit, t)
            ended |= hit
        buf.codes.copy_(codes)
        steps += 1
        if stop():
            stopped = True
            break
        if t % SYNC_EVERY == 0 or t == total - 1:
            all_ended = bool(ended.all()) if not opts.ignore_eos else False  # the one sync
            now = time.perf_counter()
            if on_progress and (now - last_report >= PROGRESS_MIN_INTERVAL_S or all_ended or t == total - 1):
                last_report = now
                rate = steps / (now - t1) if now > t1 else 0.0
                on_progress(Progress("frames", t + 1, total, now - t0, rate, (total - t - 1) / rate if rate else None))
            if on_frames is not None:
                on_frames(FramesSoFar(frames, t + 1, lengths, ended))
            if all_ended:
                break
    if stopped:  # keep what exists: frames 0..t of every take not already ended
        lengths = torch.minimum(lengths, torch.tensor(t + 1, device=dev))
    synchronize(dev)
    frames_s = time.perf_counter() - t1
    lengths_h = lengths.tolist()
    frames_h = frames.cpu().numpy()
    return FramesResult(
        frames=[frames_h[i, : lengths_h[i]].copy() for i in range(n)],
        seeds=seeds,
        prompt_len=len(prompt),
        prompt_s=prompt_s,
        frames_s=frames_s,
        steps=steps,
        stopped=stopped,
        ended=[bool(x) for x in ended.tolist()],
    )
