"""HeartMuLa Studio's engine: lyrics + tags -> music, on XPU, CUDA, MPS or CPU.

The public surface (the UI imports only these names):
    load_engine(model_path, *, version, device, codec_device, dtype, lazy_load) -> Engine
    Engine.generate(lyrics, tags, options, *, on_progress, should_stop) -> GenerateResult
    Engine.generate_frames(...) -> FramesResult;  Engine.decode(frames, options) -> audio
    GenerateOptions, GenerateResult, FramesResult, Progress, GenerationCancelled
"""

from .engine import Engine, EngineConfig, GenerateResult, GenerationCancelled, load_engine
from .generate import FramesResult, GenerateOptions, Progress

__all__ = [
    "Engine",
    "EngineConfig",
    "FramesResult",
    "GenerateOptions",
    "GenerateResult",
    "GenerationCancelled",
    "Progress",
    "load_engine",
]
