"""Hearing a song while it is made (Generate tab): when take 1 may start playing, what of each
take is playable, and the pieces that go to the streaming player.

The engine hands out a take's audio a codec window at a time (`stream_chunks` says which frames
each chunk needs). On a device faster than real time take 1 plays from its first chunk; on a
slower one it waits until the rest can play through without a stall, or until the musician
asks for what is ready.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from heartmula import FRAME_MS, SAMPLE_RATE, soft_limit, stream_chunks, write_audio

from .common import fmt_s

REAL_TIME_FPS = 1000 / FRAME_MS  # frames of audio per second of playback (12.5)
PIECE_S = 2.0  # seconds per piece sent to the streaming player: the browser's player looks for
# new audio about once per piece, so short pieces keep a new chunk from waiting on that look


def start_delay_s(frames_done: int, total_frames: int, frames_per_s: float, playable_frames: int,
                  chunk_latency_s: float = 0.0) -> float | None:
    """Seconds from now until playback from the start can run to the end of a take of
    `total_frames` without running out of audio (0.0: now), at `frames_per_s` (the live rate)
    and with each chunk decoded `chunk_latency_s` after its frames exist, one after another.
    None while no rate is known and frames are still to come."""
    delay, codec_free_at, start_frame = 0.0, 0.0, 0
    for end, ready_at in stream_chunks(total_frames):
        if end > playable_frames:
            if frames_done >= ready_at:
                frames_s = 0.0
            elif frames_per_s <= 0:
                return None
            else:
                frames_s = (ready_at - frames_done) / frames_per_s
            codec_free_at = max(frames_s, codec_free_at) + chunk_latency_s  # the codec decodes in turn
            delay = max(delay, codec_free_at - start_frame / REAL_TIME_FPS)
        start_frame = end
    return max(0.0, delay)


def can_stream() -> bool:
    """Gradio's streaming audio encodes AAC through ffmpeg; without it the live player stays
    silent and the takes play once done (as before there was a live player)."""
    import shutil

    return shutil.which("ffmpeg") is not None


def wav_bytes(audio) -> bytes:
    """float32 [2, n] -> 16-bit WAV bytes, converted as `write_audio` converts a WAV file (so
    the pieces heard and the file saved hold the same samples)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio.T, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class LivePlayback:
    """One generation's chunks, as the handler receives them. Take 1 streams; every take's audio
    so far is kept (limited the way the saved files will be) for the takes picked meanwhile."""

    def __init__(self, takes: int, total_frames: int, streaming: bool = True):
        self.takes, self.total_frames, self.streaming = takes, total_frames, streaming
        self.audio: list[list] = [[] for _ in range(takes)]  # per take: limited chunks, in order
        self.samples = [0] * takes
        self.frames_done, self.frames_per_s = 0, 0.0
        self.frames_ended = False
        self.latency_s = 0.0  # how long the last chunk came after the frames it needed
        self._ready_seen: dict[int, float] = {}  # frames needed -> when they existed
        self.playing = False
        self.sent = 0  # samples of take 1 sent to the streaming player

    # ----- what comes in ------------------------------------------------------------------------
    def progress(self, p) -> None:
        if p is None:
            return
        if p.phase == "frames":
            self.total_frames = p.total or self.total_frames
            self.frames_done = max(self.frames_done, p.done)
            if p.per_s > 0:
                self.frames_per_s = p.per_s
            now = time.monotonic()
            for _, ready_at in stream_chunks(self.total_frames):
                if self.frames_done >= ready_at:
                    self._ready_seen.setdefault(ready_at, now)
        elif p.phase == "decode":  # every frame is made (a song may end before its maximum)
            self.frames_ended = True

    def add(self, chunk) -> None:
        """An AudioChunk from the engine."""
        audio = soft_limit(chunk.audio)
        self.audio[chunk.take].append(audio)
        self.samples[chunk.take] += audio.shape[1]
        if chunk.take == 0:
            end_frame = self.samples[0] * 1000 // (SAMPLE_RATE * FRAME_MS)
            needed = next((r for e, r in stream_chunks(self.total_frames) if e >= end_frame), None)
            if needed in self._ready_seen:
                self.latency_s = time.monotonic() - self._ready_seen[needed]

    # ----- what goes out ------------------------------------------------------------------------
    def playable_s(self, take: int = 0) -> float:
        return self.samples[take] / SAMPLE_RATE

    def delay_s(self) -> float | None:
        """Seconds until take 1 can play through (see start_delay_s)."""
        if self.frames_ended:
            return 0.0
        playable_frames = round(self.playable_s(0) * REAL_TIME_FPS)
        return start_delay_s(self.frames_done, self.total_frames, self.frames_per_s, playable_frames,
                             self.latency_s)

    def start_if_ready(self, play_now: bool) -> bool:
        """Start take 1 if it has audio and may start (or the musician asked); True once playing."""
        if self.streaming and not self.playing and self.samples[0] and (play_now or self.delay_s() == 0.0):
            self.playing = True
        return self.playing

    def pieces(self) -> list[bytes]:
        """Take 1's audio not yet sent to the streaming player, as WAV pieces of PIECE_S."""
        if not self.playing or self.sent >= self.samples[0]:
            return []
        import numpy as np

        fresh = np.concatenate(self.audio[0], axis=1)[:, self.sent:]
        self.sent = self.samples[0]
        step = int(PIECE_S * SAMPLE_RATE)
        return [wav_bytes(fresh[:, i: i + step]) for i in range(0, fresh.shape[1], step)]

    def write_so_far(self, take: int, path: Path) -> Path:
        """The take's audio so far as a WAV file (the start of the file it will be saved as)."""
        import numpy as np

        return write_audio(path, np.concatenate(self.audio[take], axis=1))

    def note(self) -> str:
        """One line: what is playable, and whether take 1 plays or why it waits."""
        total_s = self.total_frames / REAL_TIME_FPS
        playable = " · ".join(f"take {i + 1}: {fmt_s(self.playable_s(i))}" for i in range(self.takes))
        if not self.streaming:
            return (f"Playable so far: {playable} (pick a take below to hear it). Install FFmpeg to hear "
                    "take 1 here while it is made.")
        if self.playing:
            return f"🔊 **Playing take 1** · playable {playable} of up to {fmt_s(total_s)}"
        if not self.samples[0]:
            first = stream_chunks(self.total_frames)[0]
            return (f"🔊 Take 1 starts playing here once its first {fmt_s(first[0] / REAL_TIME_FPS)} "
                    f"are made (after frame {first[1]})")
        delay = self.delay_s()
        rate = f"{self.frames_per_s:.1f} frames/s, real time is {REAL_TIME_FPS:g}"
        when = "when the speed is known" if delay is None else f"in about {fmt_s(delay)}"
        return (f"⏳ Playable {playable}. Take 1 starts {when}, so that the rest plays through without "
                f"stopping ({rate}). **▶ Play what is ready** starts it now.")
