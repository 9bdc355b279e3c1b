"""`decode_frame` captured as CUDA graphs: the whole frame step is one launch.

A frame is ~1,500 small kernels (28 backbone layers, seven depth-decoder passes,
eight samplings); launched one by one from Python they cost more than the weights
take to read. Captured once, each step is a single graph replay.

Attention must read only the filled part of the KV cache, or long songs slow down:
positions are grouped in buckets of `BUCKET` and each bucket has its own graph that
attends to [0, bucket end). All graphs share one memory pool.
"""

from __future__ import annotations

import torch

from ..accel.graphs import capture_graph
from .generate import BUCKET, GenerateOptions, StepBuffers, attention_length, cache_length, check_fits, decode_frame
from .sampling import topk_cap_for
from .model import HeartMuLa


class GraphedStep:
    """Callable as `step(model, buf, pos)` for `generate_frames`; replays a captured graph."""

    def __init__(self, model: HeartMuLa, buf: StepBuffers, bucket: int = BUCKET):
        self.model, self.buf = model, buf
        self.cache_len = model.backbone.cache_len
        self.key = self.cache_key(model, buf)
        self.bucket = bucket
        self.lens = sorted({attention_length(p, self.cache_len, bucket) for p in range(0, self.cache_len, bucket)})
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    @staticmethod
    def cache_key(model: HeartMuLa, buf: StepBuffers) -> tuple:
        """What a captured graph depends on: the cache and buffer storage it reads and writes."""
        kv = model.backbone.layers[0].attn.kv_cache
        return (id(buf), kv.k_cache.data_ptr() if kv is not None else None, model.backbone.cache_len)

    def bucket_for(self, pos: int) -> int:
        if pos >= self.cache_len:
            raise ValueError(f"position {pos} is beyond the cache ({self.cache_len})")
        return attention_length(pos, self.cache_len, self.bucket)

    @torch.inference_mode()
    def capture(self, attn_len: int) -> None:
        """Warm up on a side stream, then capture. The warm-up writes the KV cache at the
        current position only, which the real step overwrites with the same values, and
        a position is always written before it is read: capturing mid-song is safe."""
        # Thread-local: in a song queue on one card the codec decodes the previous song in
        # another thread meanwhile, and a global capture forbids that thread's allocations
        # (a longer song needs new caches, hence new graphs, mid-queue); its device-wide
        # waits queue behind the capture on devices.device_wide.
        self.graphs[attn_len] = capture_graph(lambda: decode_frame(self.model, self.buf, attn_len), pool=self.pool,
                                              capture_error_mode="thread_local")

    def capture_all(self, should_stop=None, upto: int | None = None) -> bool:
        """Capture every bucket's graph not captured yet (those attending to at most `upto`
        positions, if given); False if `should_stop` ended it first."""
        for n in self.lens:
            if upto is not None and n > upto:
                break
            if should_stop is not None and should_stop():
                return False
            if n not in self.graphs:
                self.capture(n)
        return True

    def __call__(self, model: HeartMuLa, buf: StepBuffers, pos: int) -> torch.Tensor:
        n = self.bucket_for(pos)
        if n not in self.graphs:
            self.capture(n)
        graph, out = self.graphs[n]
        graph.replay()
        return out  # overwritten by the next replay: the loop copies it out first


def request_shape(opts: GenerateOptions, audit: bool = False) -> tuple:
    """What a request's step buffers, compiled sampling and graphs depend on (besides the caches)."""
    return opts.takes, opts.guided, topk_cap_for(opts.topk), audit


def prepare_step(model: HeartMuLa, prompt_len: int, opts: GenerateOptions, ready: dict | None = None, *,
                 compiled: bool = False, graphs: bool = False, audit: bool = False,
                 kept_frames: int = 0) -> tuple[StepBuffers, GraphedStep | None]:
    """What a request needs before its prompt step: the KV caches set up for its rows and
    length, step buffers for its (takes, guidance, top-k bound), and with `graphs` the graphed
    frame step (captured on first use). The engine and the benchmark both prepare requests here.

    `ready` (request_shape -> (buffers, step)) keeps what each shape prepared: a shape seen
    before gets its buffers and graphs back, as long as the caches they were captured on are
    still the ones in use (see `Llama.setup_cache`)."""
    model_max = model.args.backbone.max_seq_len
    check_fits(prompt_len, opts, model_max, kept_frames)
    ready = {} if ready is None else ready
    before = model.backbone.cache_rows and model.backbone.layers[0].attn.kv_cache.k_cache.data_ptr()
    model.setup_caches(opts.rows, cache_length(prompt_len, opts.max_frames, model_max))
    if model.backbone.layers[0].attn.kv_cache.k_cache.data_ptr() != before:  # new caches: every graph is stale
        for key, (buffers, _) in ready.items():
            ready[key] = (buffers, None)
    shape = request_shape(opts, audit)
    buffers, step = ready.get(shape, (None, None))
    if buffers is None:
        buffers = StepBuffers(model, opts.takes, opts.guided, compiled=compiled, topk_cap=shape[2], audit=audit)
    if graphs and (step is None or step.key != GraphedStep.cache_key(model, buffers)):
        step = GraphedStep(model, buffers)  # the caches were replaced: graphs of the old ones are dropped
    ready[shape] = (buffers, step if graphs else None)
    return ready[shape]
