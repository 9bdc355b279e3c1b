"""`Engine`: owns the models, their caches and one lock; the API the CLI and UI call.

One generation at a time per engine (one static cache). Models load on first use or
at `load()`; with `lazy_load` each model is freed right after its phase, so the
language model and the codec never sit in device memory together.
"""

from __future__ import annotations

import gc
import threading
import time
import functools
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .accel import device as devices
from .audio import FRAME_MS, SAMPLE_RATE
from .checkpoint import CheckpointPaths, resolve_paths
from .mula.load import load_heartmula
from .mula.quant import check_quant
from .accel.graphs import graphs_supported
from .mula.graphed_step import prepare_step
from .mula.generate import (BUCKET, FramesResult, FramesSoFar, GenerateOptions, Progress, StepBuffers, attention_length,
                            check_fits, generate_frames, take_seeds)
from .mula.prompt import GenConfig, Prompt, build_prompt, load_tokenizer

MAX_LYRICS_CHARS = 20_000
MAX_TAGS_CHARS = 1_000
RESERVE_SHARE = 0.5  # reserved caches may take at most this share of the memory free for them


class DeviceOutOfMemory(RuntimeError):
    """The device ran out of memory during a job; the job's memory has been freed and the
    message says what to change (fewer takes, a shorter length, lazy load)."""


class GenerationCancelled(Exception):
    """The user stopped the job; `partial` holds the frames made so far (may be None)."""

    def __init__(self, message: str = "stopped by the user", partial: FramesResult | None = None):
        super().__init__(message)
        self.partial = partial


@dataclass(frozen=True)
class EngineConfig:
    model_path: str = "./ckpt"
    version: str = "3B"
    device: str = "auto"  # the language model's device
    codec_device: str | None = None  # None: same as `device`
    dtype: str = "auto"  # auto: bfloat16 on accelerators, float32 on CPU
    lazy_load: bool = False  # free each model right after its phase
    graphs: bool | None = None  # replay the frame step as CUDA graphs; None: on where supported
    compile: bool = False  # torch.compile the block and sampling stretches (faster; compiles on first use)
    quant: str = "none"  # "int8": the language model's matrices as int8 + per-row scales (mula/quant.py; experimental)


@dataclass(frozen=True)
class AudioChunk:
    """Part of a take's audio that is final: samples [start_sample, start_sample + n)."""

    take: int
    audio: np.ndarray  # float32 [2, n] at sample_rate
    start_sample: int
    sample_rate: int


@dataclass(frozen=True)
class GenerateResult:
    audio: list[np.ndarray]  # per take: float32 [2, samples] at sample_rate
    sample_rate: int
    frames: list[np.ndarray]  # per take: [n_frames, 8] int64
    seeds: list[int]
    options: GenerateOptions
    lyrics: str
    tags: str
    prompt_len: int
    prompt_s: float
    frames_s: float
    decode_s: float
    total_s: float
    frames_per_s: float  # frames of one take per second of the frame loop
    peak_memory_bytes: int  # device peak during the job (0 where the backend does not say)
    device: str
    model_version: str
    quant: str = "none"  # the language model's weights: "none" or "int8" (EngineConfig.quant)
    timings: dict = field(default_factory=dict)
    parent: dict | None = None  # for a song continued from another: its id, the frame it branched at, the mode

    @property
    def durations_s(self) -> list[float]:
        return [a.shape[-1] / self.sample_rate for a in self.audio]


def _clean_text(value: str, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {type(value).__name__}")
    # Control characters (but newlines and tabs) carry no meaning for the tokenizer.
    value = "".join(ch for ch in value if ch in "\n\t" or ch.isprintable())
    if not value.strip():
        raise ValueError(f"{name} are empty; write some {name}")
    if name == "tags" and not any(ch.isalnum() for ch in value):  # ",,," or " - ": no style at all
        raise ValueError(f"tags hold no words ({value.strip()[:40]!r}); write some, e.g. pop, piano, female vocals")
    if len(value) > limit:
        raise ValueError(f"{name} are {len(value)} characters long; the limit is {limit}")
    return value.strip()


def kept_frames(kept: list[np.ndarray], takes: int, vocab_size: int) -> np.ndarray:
    """Per-take frames to continue from -> [takes, F, 8] int64, checked: one array per take
    (one array serves every take), the same length each, at least one frame, codes of the
    model's audio vocabulary."""
    arrays = [np.asarray(k) for k in (kept if isinstance(kept, (list, tuple)) else [kept])]
    if len(arrays) == 1 and takes > 1:
        arrays = arrays * takes
    if len(arrays) != takes:
        raise ValueError(f"kept frames for {len(arrays)} take(s) were given, but {takes} take(s) were asked")
    for a in arrays:
        if a.ndim != 2 or a.shape[1] != 8 or a.shape[0] < 1 or a.shape != arrays[0].shape:
            raise ValueError(f"kept frames must be [frames, 8] per take, all the same length; got "
                             f"{[list(x.shape) for x in arrays]}")
        if not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() >= vocab_size:
            raise ValueError(f"kept frames must hold codes 0 to {vocab_size - 1}")
    return np.stack(arrays).astype(np.int64)


def codec_codes(frames: np.ndarray, codebook_size: int) -> torch.Tensor:
    """[n, 8] frames -> the codec's [8, n] codes. The language model's vocabulary has a few
    special ids past the codebook (8192 and up); the stop rule drops frames holding the
    end id, but the others can still be sampled, and with ignore_eos so can the end id:
    they are clamped to the codebook rather than crash the decode."""
    return torch.from_numpy(np.ascontiguousarray(np.clip(frames, 0, codebook_size - 1).T))


def _a_request(gen_fn):
    """A generator method that is a request (see Engine._request) from start to end."""
    @functools.wraps(gen_fn)
    def wrapper(self, *args, **kwargs):
        with self._request():
            return (yield from gen_fn(self, *args, **kwargs))

    return wrapper


class Engine:
    def __init__(self, config: EngineConfig | None = None, **overrides):
        self.config = replace(config or EngineConfig(), **overrides)
        check_quant(self.config.quant)
        self.device = devices.resolve_device(self.config.device)
        self.codec_device = devices.resolve_device(self.config.codec_device or self.config.device)
        self.dtype = devices.resolve_dtype(self.config.dtype, self.device)
        self.paths: CheckpointPaths = resolve_paths(self.config.model_path, self.config.version, need_codec=False)
        self.gen = GenConfig.from_file(self.paths.gen_config)
        self.tokenizer = load_tokenizer(self.paths.tokenizer)
        self.mula = None
        self.codec = None
        # Per request shape (graphed_step.request_shape): its step buffers and, when graphs are
        # on, its GraphedStep; kept across requests so that changing takes or guidance back
        # and forth costs nothing after the first time (see reserve_for).
        self._ready: dict[tuple, tuple[StepBuffers, object]] = {}
        self._lock = threading.RLock()  # re-entered by generate -> generate_frames (decode takes _codec_lock)
        self._codec_lock = threading.Lock()  # one decode at a time
        # Requests waiting for or holding the engine: a background warm-up gives way to them.
        self._requests = 0
        self._requests_cv = threading.Condition()
        self._unloads = 0  # `unload` calls: a warm-up started before one ends (see warm_shapes)
        self.last_timings: dict = {}

    # ----- loading -------------------------------------------------------------------
    def load(self, codec: bool = True) -> "Engine":
        """Load the language model (and the codec) now rather than on first use."""
        with self._lock:  # a job starting meanwhile would load them a second time
            self._ensure_mula()
        if codec:
            with self._codec_lock:
                self._ensure_codec()
        return self

    def _ensure_mula(self):
        if self.mula is None:
            t = time.perf_counter()
            self.mula = load_heartmula(self.paths.mula, self.device, self.dtype, quant=self.config.quant)
            if devices.triton_kernels_available(self.device):
                # The blocks' products only where graphs replay them: launched one by one
                # from Python, Triton's per-call cost outweighs the faster kernel.
                self.mula.use_gemv(blocks=self.graphs_enabled)
            if self.config.compile:
                self.mula.compile_blocks()
            devices.synchronize(self.device)
            self.last_timings["load_mula_s"] = time.perf_counter() - t
        return self.mula

    def _ensure_codec(self):
        if self.codec is None:
            from .codec.decoder import load_codec

            if not self.paths.codec.is_dir():
                from .checkpoint import DOWNLOAD_HINT, CheckpointError

                raise CheckpointError(
                    f"expected the HeartCodec model at {self.paths.codec}, but it is missing. "
                    + DOWNLOAD_HINT.format(root=self.paths.root)
                )
            t = time.perf_counter()
            codec_dtype = devices.resolve_dtype(self.config.dtype, self.codec_device)
            self.codec = load_codec(self.paths.codec, self.codec_device, codec_dtype)
            if self.config.compile:
                self.codec.compile()
            if self.codec_graphs_enabled:
                self.codec.use_graphs()
            devices.synchronize(self.codec_device)
            self.last_timings["load_codec_s"] = time.perf_counter() - t
        return self.codec

    def unload(self, mula: bool = True, codec: bool = True) -> None:
        """Free the models' device memory (it measurably returns to the driver). The language
        model waits for the job using it; a background warm-up gives way at once, and ends
        rather than load the model again. A decode in progress keeps its codec to the end."""
        if mula:
            self._unloads += 1
        self._free_models(mula, codec)

    def _free_models(self, mula: bool, codec: bool) -> None:
        if mula:
            # A request (so a warm step stops within a frame) that holds the engine (so no job
            # is using the caches and weights being freed).
            with self._request(), self._lock:
                if self.mula is not None:
                    self.mula.free_caches()
                    self.mula = None
                    self._ready = {}
        if codec:
            self.codec = None
        gc.collect()
        for d in {self.device, self.codec_device}:
            devices.synchronize(d)
            devices.empty_cache(d)

    def free_caches(self) -> None:
        """Free the KV caches, the step buffers and graphs of every shape, and any reservation
        (after the job using them, if one runs)."""
        with self._request(), self._lock:
            if self.mula is not None:
                self.mula.free_caches()
            self._ready = {}
        gc.collect()
        devices.empty_cache(self.device)

    # ----- prompts ------------------------------------------------------------------
    def build_prompt(self, lyrics: str, tags: str) -> Prompt:
        lyrics = _clean_text(lyrics, "lyrics", MAX_LYRICS_CHARS)
        tags = _clean_text(tags, "tags", MAX_TAGS_CHARS)
        return build_prompt(self.tokenizer, lyrics, tags, self.gen)

    def check_request(self, lyrics: str, tags: str, options: GenerateOptions) -> None:
        """Everything about a request that can be checked before any model loads: the texts,
        and that the prompt and the length fit the backbone (ValueError says what to change)."""
        prompt = self.build_prompt(lyrics, tags)
        if self.mula is not None:
            model_max = self.mula.args.backbone.max_seq_len
        else:
            from .checkpoint import read_json
            from .mula.model import HeartMuLaArgs

            config = self.paths.mula / "config.json"
            model_max = HeartMuLaArgs.from_config(read_json(config), where=str(config)).backbone.max_seq_len
        check_fits(len(prompt), options, model_max)

    # ----- generation ---------------------------------------------------------------
    def _prepare(self, prompt: Prompt, opts: GenerateOptions, kept_frames: int = 0):
        """(step buffers, graphed step or None) for this request, kept per shape in `_ready`."""
        return prepare_step(self._ensure_mula(), len(prompt), opts, self._ready, compiled=self.config.compile,
                            graphs=self.graphs_enabled, kept_frames=kept_frames)

    @property
    def reserved(self) -> bool:
        """The caches are sized once for every shape (`reserve_for`) and outlive stopped jobs."""
        return self.mula is not None and self.mula.backbone.reserved != (0, 0)

    def reserve_for(self, shapes: list[GenerateOptions]) -> bool:
        """Size the KV caches once for the most rows of `shapes` and the model's every position,
        so that requests of any of those takes and guidance, at any length, share one set of
        caches and so keep their compiled code and device graphs. Not under lazy load (the
        model is freed after each song), nor where the caches would take more than
        RESERVE_SHARE of the memory free for them: then each request's caches fit it alone,
        as without a reservation. Returns whether the caches are reserved."""
        if not shapes or self.config.lazy_load:
            return False
        with self._lock:
            model = self._ensure_mula()
            rows = max(o.rows for o in shapes)
            positions = model.args.backbone.max_seq_len
            if model.backbone.reserved[0] >= rows and model.backbone.reserved[1] >= positions:
                return True
            held = model.cache_bytes(model.backbone.cache_rows, model.backbone.cache_len)  # freed if replaced
            need = model.cache_bytes(rows, positions)
            if need > RESERVE_SHARE * (devices.free_memory(self.device) + held):
                self.last_timings["reserve"] = f"not reserved: {need / 2**30:.1f} GiB is too much of the free memory"
                return False
            model.reserve_caches(rows, positions)
            self.last_timings["reserve"] = f"{rows} rows x {positions} positions ({need / 2**30:.2f} GiB)"
            return True

    def _graphs_on(self, device: torch.device) -> bool:
        wanted = self.config.graphs
        return graphs_supported(device) and (wanted is None or wanted)

    @property
    def graphs_enabled(self) -> bool:
        """The frame step as CUDA graphs (`GraphedStep`)."""
        return self._graphs_on(self.device)

    @property
    def codec_graphs_enabled(self) -> bool:
        """The codec's Euler solves as CUDA graphs (`HeartCodec.use_graphs`)."""
        return self._graphs_on(self.codec_device)

    def warmup(self, options: GenerateOptions | None = None) -> float:
        """Compile and capture what a default request needs, so the first song doesn't
        wait for it. Returns the seconds it took."""
        opts = options or GenerateOptions()
        t = time.perf_counter()
        with self._lock:
            self._warm_frames(opts, lambda: False)
            if self.config.compile or self.codec_graphs_enabled:
                self.warm_codec(opts)
        self.last_timings["warmup_s"] = time.perf_counter() - t
        return self.last_timings["warmup_s"]

    def _warm_frames(self, opts: GenerateOptions, should_stop: Callable[[], bool], every_length: bool = True) -> bool:
        """A short run of `opts`' shape, then its attention buckets' graphs (those its own length
        reaches, or with `every_length` all the caches hold): what its first request would
        otherwise compile and capture. False when `should_stop` ended it (nothing is half-made
        that a request could see: it resets positions, and graphs are whole or absent)."""
        with self._lock:
            if should_stop():
                return False
            try:
                prompt = self.build_prompt("la la la", "pop")
                room = self._ensure_mula().args.backbone.max_seq_len - len(prompt)  # test models hold less
                opts = replace(opts, max_audio_length_ms=min(opts.max_audio_length_ms, room * FRAME_MS))
                buf, step = self._prepare(prompt, opts)
                short = replace(opts, max_audio_length_ms=16 * FRAME_MS, ignore_eos=True, seed=0)
                fr = generate_frames(self.mula, prompt, self.gen, short, buffers=buf, step=step,
                                     should_stop=should_stop)
                # A song's own lyrics make its prompt longer than this one's: one bucket more covers them.
                upto = None if every_length else attention_length(len(prompt) + opts.max_frames - 1 + BUCKET,
                                                                   self.mula.backbone.cache_len)
                if fr.stopped or (step is not None and not step.capture_all(should_stop, upto)):
                    return False
                devices.synchronize(self.device)
                return True
            except BaseException as e:
                self._after_failure(e)
                raise

    @contextmanager
    def _request(self):
        """Mark a real request for as long as it waits for or uses the engine."""
        with self._requests_cv:
            self._requests += 1
        try:
            yield
        finally:
            with self._requests_cv:
                self._requests -= 1
                self._requests_cv.notify_all()

    @property
    def busy(self) -> bool:
        """A real request is waiting for the engine or running on it."""
        return self._requests > 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request waits for or runs on the engine (a stopped job's last codec
        window may still be finishing); False if `timeout` seconds passed first."""
        with self._requests_cv:
            return self._requests_cv.wait_for(lambda: self._requests == 0, timeout=timeout)

    def warm_shapes(self, shapes: list[GenerateOptions], *, should_stop: Callable[[], bool] | None = None,
                    on_warmed: Callable[[GenerateOptions, float], None] | None = None) -> list[GenerateOptions]:
        """Warm the request shapes in `shapes` (most likely first), in the background: for each,
        what its first request would otherwise pay (compiled code, device graphs, the codec at
        its batch). The caches are first reserved for all of them at any length (`reserve_for`),
        so every shape warmed stays warm. A first pass warms each shape up to its own length
        (`on_warmed` is called then); a second captures the graphs of every longer length.

        It gives way to real requests: one that arrives stops the warm step within a frame or a
        graph, and the step is tried again once the engine is idle. Returns the shapes warmed in
        the first pass (all of them unless `should_stop` ended it)."""
        unloads = self._unloads
        stop = lambda: self._unloads != unloads or (should_stop is not None and should_stop())  # noqa: E731
        pending = [(opts, False) for opts in shapes] + [(opts, True) for opts in shapes]
        warmed, reserved = [], False
        while pending and not stop():
            with self._requests_cv:  # let real requests go first
                if self._requests:
                    self._requests_cv.wait(timeout=0.1)
                    continue
            if not reserved:
                reserved = True
                with self._lock:  # an unload between the look above and here must not load it again
                    if stop():
                        break
                    self.reserve_for(shapes)
                continue
            opts, every_length = pending[0]
            t = time.perf_counter()
            if self._warm_one(opts, lambda: self.busy or stop(), every_length):
                pending.pop(0)
                if not every_length:
                    warmed.append(opts)
                    if on_warmed is not None:
                        on_warmed(opts, time.perf_counter() - t)
            elif self.busy:
                self.last_timings["warm_gave_way"] = self.last_timings.get("warm_gave_way", 0) + 1
        return warmed

    def _warm_one(self, opts: GenerateOptions, should_stop: Callable[[], bool], every_length: bool = False) -> bool:
        """One shape's warm step: frames (see `_warm_frames`), then the codec at its batch on the
        first pass; False when a request came first."""
        if not self._warm_frames(opts, should_stop, every_length):
            return False
        if not every_length and (self.config.compile or self.codec_graphs_enabled):
            if should_stop():  # the codec's warm step cannot stop half-way: not when a request waits
                return False
            with self._codec_lock:
                self.warm_codec(opts)
        return True

    def warm_codec(self, options: GenerateOptions | None = None) -> None:
        """Decode silence of two windows the way a request decodes, so that the codec's
        compilation and its two Euler-solve graphs (first window, later windows) are made
        before the first song needs them."""
        from .codec.decoder import WINDOW_FRAMES

        opts = options or GenerateOptions()
        codes = np.zeros((8, WINDOW_FRAMES + 1), dtype=np.int64)
        self._ensure_codec().decode_batch([codes] * opts.takes, num_steps=opts.codec_steps,
                                          guidance_scale=opts.codec_guidance_scale,
                                          generators=[torch.Generator().manual_seed(0)] * opts.takes)
        devices.synchronize(self.codec_device)

    def generate_frames(
        self,
        lyrics: str,
        tags: str,
        options: GenerateOptions | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        kept: list[np.ndarray] | None = None,
        on_frames: Callable[[FramesSoFar], None] | None = None,
        **overrides,
    ) -> FramesResult:
        """Lyrics + tags -> the codes of every take (no audio). A stop returns the frames so far.

        `kept`: per take, the first frames of its song ([F, 8], the same F for every take),
        to extend the song or regenerate it from frame F: see `kept_frames`."""
        opts = replace(options or GenerateOptions(), **overrides)
        prompt = self.build_prompt(lyrics, tags)
        with self._request(), self._lock:
            try:
                vocab = self._ensure_mula().args.audio_vocab_size
                kept_arr = kept_frames(kept, opts.takes, vocab) if kept is not None else None
                buf, step = self._prepare(prompt, opts, 0 if kept_arr is None else kept_arr.shape[1])
                result = generate_frames(
                    self.mula, prompt, self.gen, opts, buffers=buf, step=step,
                    on_progress=on_progress, should_stop=should_stop, kept=kept_arr, on_frames=on_frames,
                )
            except BaseException as e:
                self._after_failure(e)
                raise
            if result.stopped and not self.reserved:  # reserved caches are the engine's, not the job's
                self.free_caches()
            if self.config.lazy_load:
                self._free_models(mula=True, codec=False)
            return result

    def decode(
        self,
        frames: list[np.ndarray],
        options: GenerateOptions | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        seeds: list[int] | None = None,
    ) -> list[np.ndarray]:
        """Frames of each take ([n, 8]) -> float32 stereo [2, samples] at 48 kHz each.

        Take i's codec noise comes from a generator seeded with seeds[i] (the take's
        generation seed), so a seed reproduces the audio, not just the frames."""
        opts = options or GenerateOptions()
        with self._request(), self._codec_lock:  # the codec may run beside a generation (see pipeline.py)
            return self._decode(frames, opts, on_progress, should_stop, seeds)

    def _decode(self, frames, opts, on_progress, should_stop, seeds) -> list[np.ndarray]:
        try:
            codec = self._ensure_codec()
        except BaseException as e:
            self._after_failure(e, free_mula=False)
            raise
        t0 = time.perf_counter()
        stop = should_stop or (lambda: False)

        def progress(done: int, total: int) -> None:
            if stop():
                raise GenerationCancelled("stopped while decoding")
            if on_progress:
                el = time.perf_counter() - t0
                rate = done / el if el > 0 else 0.0
                on_progress(Progress("decode", done, total, el, rate, (total - done) / rate if rate else None))

        codes = [codec_codes(f, codec.config.codebook_size) for f in frames]
        try:
            generators = [torch.Generator().manual_seed(s) for s in seeds] if seeds is not None else None
            audio = codec.decode_batch(
                codes, num_steps=opts.codec_steps, guidance_scale=opts.codec_guidance_scale,
                generators=generators, on_progress=progress,
            )
        except BaseException as e:
            self._after_failure(e, free_mula=False)
            raise
        if self.config.lazy_load:
            self._free_models(mula=False, codec=True)
        return audio

    def generate(
        self,
        lyrics: str,
        tags: str,
        options: GenerateOptions | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        kept: list[np.ndarray] | None = None,
        codec_seeds: list[int] | None = None,
        **overrides,
    ) -> GenerateResult:
        """Lyrics + tags -> a song per take. Raises GenerationCancelled when stopped.

        `kept` continues songs (see generate_frames). `codec_seeds`: the codec's noise per take
        (default: the take's seed); a song regenerated from a point with a new seed keeps its
        parent's codec seed, so the audio of the part it kept comes out the same."""
        opts = replace(options or GenerateOptions(), **overrides)
        with self._request(), self._lock:
            t0 = time.perf_counter()
            for d in {self.device, self.codec_device}:
                devices.reset_peak_memory(d)
            fr = self.generate_frames(lyrics, tags, opts, on_progress=on_progress, should_stop=should_stop, kept=kept)
            if fr.stopped:
                raise GenerationCancelled("stopped while generating frames", partial=fr)
            t1 = time.perf_counter()
            try:
                audio = self.decode(fr.frames, opts, on_progress=on_progress, should_stop=should_stop,
                                    seeds=codec_seeds or fr.seeds)
            except BaseException as e:
                self._after_failure(e)
                raise
            decode_s = time.perf_counter() - t1
        return self.make_result(lyrics, tags, opts, fr, audio, decode_s, time.perf_counter() - t0)

    @_a_request
    def generate_stream(
        self,
        lyrics: str,
        tags: str,
        options: GenerateOptions | None = None,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        **overrides,
    ) -> Iterator["AudioChunk | GenerateResult"]:
        """Like `generate`, but hears the song while it is made: yields `AudioChunk`s of each
        take as soon as they are final (a codec window once the song has run past it), the
        codec decoding window k while the language model makes the frames of window k+1, and
        at last the `GenerateResult` (its audio is the chunks joined: the same as `generate`'s).

        A stop ends the frames and the decoding; the chunks already yielded stay yours, and
        GenerationCancelled is raised."""
        import queue

        from .codec.decoder import HOP_FRAMES, WINDOW_FRAMES, StreamDecoder, n_windows_for

        opts = replace(options or GenerateOptions(), **overrides)
        if self.config.lazy_load:
            # One model at a time is the point of lazy load, and streaming needs both at once:
            # the song is heard when it is decoded, as `generate` makes it (which frees each model).
            result = self.generate(lyrics, tags, opts, on_progress=on_progress, should_stop=should_stop)
            for take, audio in enumerate(result.audio):
                yield AudioChunk(take=take, audio=audio, start_sample=0, sample_rate=result.sample_rate)
            yield result
            return
        if opts.seed is None:  # the codec's noise needs the seeds before the frames exist
            opts = replace(opts, seed=take_seeds(opts)[0])
        seeds = take_seeds(opts)
        abandoned = threading.Event()  # the caller stopped listening: end the frames too

        def stop() -> bool:
            return abandoned.is_set() or (should_stop is not None and should_stop())

        t0 = time.perf_counter()
        for d in {self.device, self.codec_device}:  # the result's peak is this song's
            devices.reset_peak_memory(d)
        with self._codec_lock:
            codec = self._ensure_codec()
        size = codec.config.codebook_size
        events: queue.Queue = queue.Queue()
        state = {"next": WINDOW_FRAMES + 1, "ended": 0, "frames": None}

        def decoding(fr, decoding_one: bool = False) -> None:
            """Progress: the song's windows decoded, once its frames have all been made (the
            last windows decode after them); `decoding_one`: a window just decoded, not yet counted."""
            total = sum(max(n_windows_for(len(fr.frames[i])) for i in group) for group in decoder.groups)
            done = min(total, sum(decoder.next_window) + decoding_one)
            on_progress(Progress("decode", done, total, time.perf_counter() - t0, 0.0, None))

        def on_window() -> None:
            if on_progress is not None and state["frames"] is not None:
                decoding(state["frames"], decoding_one=True)

        decoder = StreamDecoder(codec, opts.takes, num_steps=opts.codec_steps, guidance_scale=opts.codec_guidance_scale,
                                generators=[torch.Generator().manual_seed(s) for s in seeds], on_window=on_window)

        def on_frames(so_far) -> None:
            # Copy out (a device wait) only when a window may have become final: every hop, or a take ended.
            n_ended = int(so_far.ended.sum())
            if so_far.n < state["next"] and n_ended == state["ended"]:
                return
            state["ended"] = n_ended
            while state["next"] <= so_far.n:
                state["next"] += HOP_FRAMES
            lengths = so_far.lengths.tolist()
            ended = so_far.ended.tolist()
            frames = so_far.frames[:, : so_far.n].cpu().numpy()
            events.put(("frames", [frames[i, : min(so_far.n, lengths[i])] for i in range(len(lengths))], ended))

        def make_frames() -> None:
            try:
                fr = self.generate_frames(lyrics, tags, opts, on_progress=on_progress, should_stop=stop,
                                          on_frames=on_frames)
                if not fr.stopped:
                    state["frames"] = fr  # from now on each window decoded is reported (on_window)
                    if on_progress is not None:
                        # Said from here, at once: the listener may be busy with earlier windows for a while.
                        decoding(fr)
                events.put(("done", fr, None))
            except BaseException as e:  # handed to the caller's thread
                events.put(("error", e, None))

        worker = threading.Thread(target=make_frames, name="heartmula-frames", daemon=True)
        worker.start()
        pieces: list[list[np.ndarray]] = [[] for _ in range(opts.takes)]
        emitted = [0] * opts.takes
        try:
            while True:
                kind, payload, ended = events.get()
                if kind == "error":
                    raise payload
                if kind == "done":
                    fr = payload
                    if fr.stopped:
                        raise GenerationCancelled("stopped while generating frames", partial=fr)
                    if stop():  # pressed as the last frame came: the windows left are not decoded
                        raise GenerationCancelled("stopped while decoding", partial=fr)
                    with self._codec_lock:
                        chunks = decoder.finish([np.clip(f, 0, size - 1) for f in fr.frames])
                else:
                    if stop():
                        continue  # the frame loop sees the stop too and ends; decode nothing more
                    with self._codec_lock:
                        chunks = decoder.feed([np.clip(f, 0, size - 1) for f in payload], ended)
                for take, chunk in chunks:
                    pieces[take].append(chunk)
                    yield AudioChunk(take=take, audio=chunk, start_sample=emitted[take], sample_rate=SAMPLE_RATE)
                    emitted[take] += chunk.shape[1]
                if kind == "done":
                    break
        except BaseException as e:  # a stop, an error, or the caller gone: free what the job held
            abandoned.set()
            worker.join()
            # The next job may be running on the engine already (the frames are done): it owns the
            # caches now, and this thread (maybe the server's, closing the stream) must not wait for it.
            if self._lock.acquire(blocking=False):
                try:
                    self._after_failure(e)
                finally:
                    self._lock.release()
            else:
                self._after_failure(e, free_mula=False)
            raise
        finally:
            abandoned.set()  # a no-op once the frames are done
            worker.join()
        audio = [np.concatenate(p, axis=1) if p else np.zeros((2, 0), np.float32) for p in pieces]
        total_s = time.perf_counter() - t0
        yield self.make_result(lyrics, tags, opts, fr, audio, max(0.0, total_s - fr.prompt_s - fr.frames_s), total_s)

    def make_result(self, lyrics: str, tags: str, opts: GenerateOptions, fr: FramesResult,
                    audio: list[np.ndarray], decode_s: float, total_s: float) -> GenerateResult:
        """A song's result from its frames and decoded audio (also used by the song queue)."""
        return GenerateResult(
            audio=audio,
            sample_rate=SAMPLE_RATE,
            frames=fr.frames,
            seeds=fr.seeds,
            options=replace(opts, seed=fr.seeds[0]),
            lyrics=lyrics,
            tags=tags,
            prompt_len=fr.prompt_len,
            prompt_s=fr.prompt_s,
            frames_s=fr.frames_s,
            decode_s=decode_s,
            total_s=total_s,
            frames_per_s=fr.frames_per_s,
            peak_memory_bytes=max(devices.max_memory_allocated(d) for d in {self.device, self.codec_device}),
            device=devices.device_name(self.device),
            model_version=self.config.version,
            quant=self.config.quant,
        )

    def _after_failure(self, error: BaseException, free_mula: bool = True) -> None:
        """Free what a failed or stopped job held (every phase: prompt, frames, decode), so
        the next job starts clean; device out-of-memory becomes `DeviceOutOfMemory` with advice."""
        # The traceback's frames hold the failed phase's tensors: drop their locals first,
        # or the memory stays held for as long as the exception lives.
        traceback.clear_frames(error.__traceback__)
        # Not after a decode failure: a generation may be running beside it. Nor after a stop
        # while the caches are reserved: they belong to the engine, and stay warm for the next song.
        stopped = isinstance(error, (GenerationCancelled, GeneratorExit))  # GeneratorExit: the listener left
        if free_mula and not (stopped and self.reserved):
            self.free_caches()
        if self.config.lazy_load:
            self._free_models(mula=free_mula, codec=True)
        else:
            for d in {self.device, self.codec_device}:
                devices.empty_cache(d)
        if devices.is_out_of_memory(error) and not isinstance(error, DeviceOutOfMemory):
            raise DeviceOutOfMemory(
                "the device ran out of memory; try fewer takes, a shorter length, or lazy load "
                "(--lazy-load) so the language model and codec are not loaded together"
            ) from error

    # ----- information ------------------------------------------------------------------
    def memory(self) -> dict:
        """Device memory now: used, peak and total bytes per device in use."""
        out = {}
        for d in {self.device, self.codec_device}:
            out[str(d)] = {
                "name": devices.device_name(d),
                "allocated": devices.memory_allocated(d),
                "peak": devices.max_memory_allocated(d),
                "total": devices.total_memory(d),
            }
        return out


def load_engine(
    model_path: str = "./ckpt",
    *,
    version: str = "3B",
    device: str = "auto",
    codec_device: str | None = None,
    dtype: str = "auto",
    lazy_load: bool = False,
    graphs: bool | None = None,
    compile: bool = False,
    quant: str = "none",
    preload: bool = True,
) -> Engine:
    """Open a checkpoint folder; with `preload`, load the models now (unless lazy).
    quant="int8": the language model's weights as int8 (about half the memory; experimental)."""
    engine = Engine(
        EngineConfig(
            model_path=str(Path(model_path)), version=version, device=device,
            codec_device=codec_device, dtype=dtype, lazy_load=lazy_load, graphs=graphs, compile=compile,
            quant=quant,
        )
    )
    if preload and not lazy_load:
        engine.load(codec=engine.paths.codec.is_dir())
    return engine
