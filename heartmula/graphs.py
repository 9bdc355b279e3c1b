"""`decode_frame` captured as CUDA graphs: the whole frame step is one launch.

A frame is ~1,500 small kernels (28 backbone layers, seven depth-decoder passes,
eight samplings); launched one by one from Python they cost more than the weights
take to read. Captured once, each step is a single graph replay.

Attention must read only the filled part of the KV cache, or long songs slow down:
positions are grouped in buckets of `BUCKET` and each bucket has its own graph that
attends to [0, bucket end). All graphs share one memory pool.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

from . import device as devices
from .generate import BUCKET, StepBuffers, attention_length, decode_frame
from .model import HeartMuLa

T = TypeVar("T")


def graphs_supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def capture_graph(fn: Callable[[], T], warmup: int = 2, pool=None,
                  capture_error_mode: str = "global") -> tuple[torch.cuda.CUDAGraph, T]:
    """Run `fn` `warmup` times on a side stream (lazy initialisation, compilation and
    allocator warm-up stay out of the graph), then capture one call: (graph, its output).
    capture_error_mode "thread_local" lets other threads keep using the card meanwhile.

    The capture runs on this call's own stream: torch.cuda.graph's default capture stream is
    one per process, so two threads capturing at once (a song's frame steps while the codec
    thread captures a window) would record into each other's graphs. devices.device_wide
    keeps other threads from synchronizing the device, which would invalidate the capture."""
    with devices.device_wide:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode=capture_error_mode):
            out = fn()
    return graph, out


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

    def capture_all(self) -> None:
        for n in self.lens:
            if n not in self.graphs:
                self.capture(n)

    def __call__(self, model: HeartMuLa, buf: StepBuffers, pos: int) -> torch.Tensor:
        n = self.bucket_for(pos)
        if n not in self.graphs:
            self.capture(n)
        graph, out = self.graphs[n]
        graph.replay()
        return out  # overwritten by the next replay: the loop copies it out first
