"""CUDA graph capture, model-agnostic: the language model's frame step (mula/graphed_step.py)
and the codec's Euler solves (codec/decoder.py) are each captured through `capture_graph`."""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

from . import device as devices

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
