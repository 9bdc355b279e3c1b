"""A queue of songs through two devices: while song k decodes on the codec's device,
song k+1 is already generating on the language model's.

With HeartMuLa on one card and HeartCodec on another (`--mula-device cuda:0
--codec-device cuda:1`), the queue's wall time approaches the larger of the two phases'
totals instead of their sum. On one device it still runs correctly, just without overlap.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .engine import Engine, GenerateResult, GenerationCancelled
from .mula.generate import GenerateOptions


@dataclass(frozen=True)
class SongRequest:
    lyrics: str
    tags: str
    options: GenerateOptions = field(default_factory=GenerateOptions)


@dataclass(frozen=True)
class QueueReport:
    results: list[GenerateResult]  # in request order
    wall_s: float
    generate_s: float  # time the language model's device spent on frames, all songs
    decode_s: float  # time the codec spent decoding, all songs
    overlap_s: float  # time both ran at once

    @property
    def sequential_s(self) -> float:
        return self.generate_s + self.decode_s

    @property
    def audio_s(self) -> float:
        return sum(sum(r.durations_s) for r in self.results)


def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Total length of the intersection of two sets of [start, end) intervals."""
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)


def run_queue(
    engine: Engine,
    requests: list[SongRequest],
    *,
    on_song: Callable[[int, GenerateResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> QueueReport:
    """Generate every request, decoding each song while the next one generates.

    Results come back in request order; `on_song(i, result)` is called as each finishes
    (from the decoding thread). A stop or an error ends the queue and is raised here.
    """
    handoff: queue.Queue = queue.Queue(maxsize=1)  # at most one song waits for the codec
    results: list[GenerateResult | None] = [None] * len(requests)
    gen_spans: list[tuple[float, float]] = []
    dec_spans: list[tuple[float, float]] = []
    failure: list[BaseException] = []
    done = object()

    def decoder() -> None:
        while True:
            item = handoff.get()
            if item is done:
                return
            i, req, fr, t_start = item
            if failure:
                continue  # drain: the queue is ending
            try:
                t = time.perf_counter()
                audio = engine.decode(fr.frames, req.options, should_stop=should_stop, seeds=fr.seeds)
                dec_spans.append((t, time.perf_counter()))
                result = engine.make_result(req.lyrics, req.tags, req.options, fr, audio,
                                            dec_spans[-1][1] - t, time.perf_counter() - t_start)
                results[i] = result
                if on_song:
                    on_song(i, result)
            except BaseException as e:  # handed to the caller's thread below
                failure.append(e)

    worker = threading.Thread(target=decoder, name="heartmula-codec", daemon=True)
    t0 = time.perf_counter()
    worker.start()
    try:
        for i, req in enumerate(requests):
            if failure:
                break
            t = time.perf_counter()
            fr = engine.generate_frames(req.lyrics, req.tags, req.options, should_stop=should_stop)
            gen_spans.append((t, time.perf_counter()))
            if fr.stopped:
                raise GenerationCancelled(f"stopped while generating song {i + 1} of {len(requests)}", partial=fr)
            handoff.put((i, req, fr, t))
    finally:
        handoff.put(done)
        worker.join()
    if failure:
        raise failure[0]
    return QueueReport(
        results=[r for r in results if r is not None],
        wall_s=time.perf_counter() - t0,
        generate_s=sum(e - s for s, e in gen_spans),
        decode_s=sum(e - s for s, e in dec_spans),
        overlap_s=overlap(gen_spans, dec_spans),
    )
