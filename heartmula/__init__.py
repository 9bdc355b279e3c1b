"""HeartMuLa Studio's engine: lyrics + tags -> music, on XPU, CUDA, MPS or CPU.

The public surface (the UI imports only these names):
    load_engine(model_path, *, version, device, codec_device, dtype, lazy_load, quant) -> Engine
    Engine.generate(lyrics, tags, options, *, on_progress, should_stop) -> GenerateResult
    Engine.generate_frames(...) -> FramesResult;  Engine.decode(frames, options) -> audio
    GenerateOptions, GenerateResult, FramesResult, Progress, GenerationCancelled
"""

from .engine import AudioChunk, DeviceOutOfMemory, Engine, EngineConfig, GenerateResult, GenerationCancelled, load_engine
from .mula.generate import FramesResult, GenerateOptions, Progress, fresh_seed

# The studio (ui/) imports these too; none of them imports gradio.
from .audio import FRAME_MS, SAMPLE_RATE, AudioFileError, soft_limit, write_audio
from .codec.decoder import stream_chunks
from .checkpoint import find_versions
from .accel.device import DEVICE_SYNTAX, available_devices, device_choices, parse_device_arg
from .doctor import run as run_doctor
from .mula.generate import MAX_SEED, MAX_TAKES
from .mula.quant import QUANT_MODES
from .library.history import History, Song, SongGone
from .library.index import default_title
from .library.songs import clock, parse_clock, plan_continuation
from .library.sweep import prune_tree, sweep_outputs
from .asr.lyrics import LyricCheck, check_lyrics
from .library.presets import DEFAULT_PRESET, Preset, delete_preset, load_preset, save_preset
from .library.presets import load_all as load_presets
from .library.presets import user_dir as preset_user_dir
from .library.stats import LiveStats, device_utilization
from .asr.transcribe import (RTF_LABEL, TranscribeOptions, Transcriber, TranscriptionCancelled, TranscriptionResult,
                             format_transcript)
from .options import Option, from_shown_values, help_text, options_of, shown_name, shown_values
from .warm import likely_shapes, shape_of

__all__ = [
    "AudioChunk", "clock", "parse_clock", "plan_continuation",
    "DeviceOutOfMemory",
    "Engine",
    "EngineConfig",
    "FramesResult",
    "GenerateOptions",
    "fresh_seed",
    "GenerateResult",
    "GenerationCancelled",
    "Progress",
    "load_engine",
    # studio helpers
    "FRAME_MS", "SAMPLE_RATE", "write_audio", "soft_limit", "stream_chunks", "MAX_SEED", "MAX_TAKES", "QUANT_MODES", "AudioFileError", "find_versions", "available_devices", "device_choices", "DEVICE_SYNTAX", "parse_device_arg",
    "run_doctor", "History", "Song", "SongGone", "default_title", "prune_tree", "sweep_outputs", "LyricCheck", "check_lyrics", "Preset", "DEFAULT_PRESET",
    "delete_preset", "load_preset", "save_preset", "load_presets", "preset_user_dir", "LiveStats",
    "device_utilization", "RTF_LABEL", "Transcriber", "TranscriptionCancelled", "TranscriptionResult",
    "format_transcript", "TranscribeOptions", "Option", "options_of", "likely_shapes", "shape_of", "from_shown_values", "shown_values", "help_text", "shown_name",
]
