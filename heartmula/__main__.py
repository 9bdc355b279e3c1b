"""Command line: python -m heartmula {generate,transcribe,doctor,download} ...

Flags carry the names of `GenerateOptions` fields. Bad input prints one line on stderr
and exits with status 2; nothing the user asked for is half-written.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path

EXIT_USAGE = 2


def read_text_arg(value: str, what: str) -> str:
    """A flag that takes text or the path of a UTF-8 text file holding it."""
    if len(value) < 4096 and os.path.isfile(value):
        try:
            return Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{what} file {value} could not be read as UTF-8 text ({e})") from e
    return value


class ProgressBar:
    """One line on stderr: phase, bar, frames done, frames/s and ETA."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream

    def __call__(self, p) -> None:
        width = 30
        filled = int(width * p.done / p.total) if p.total else 0
        unit = "frames" if p.phase != "decode" else "windows"
        eta = f"ETA {p.eta_s:5.1f}s" if p.eta_s is not None else "ETA   ?  "
        self.stream.write(
            f"\r{p.phase:>6} [{'#' * filled}{'.' * (width - filled)}] {p.done}/{p.total} {unit} "
            f"{p.per_s:6.1f}/s {eta} "
        )
        if p.done >= p.total and p.phase == "decode":
            self.stream.write("\n")
        self.stream.flush()


def _add_generate(sub) -> None:
    from .generate import GenerateOptions

    d = GenerateOptions()
    p = sub.add_parser("generate", help="lyrics + tags -> frames and a song")
    p.add_argument("--model-path", default="./ckpt", help="checkpoint folder (official layout)")
    p.add_argument("--version", default="3B", help="HeartMuLa version: the X of HeartMuLa-oss-X")
    p.add_argument("--lyrics", required=True, help="lyrics text, or a file holding them")
    p.add_argument("--tags", required=True, help="comma-separated style tags, or a file holding them")
    p.add_argument("--save-path", help="write the song here (.mp3, .wav or .flac) with a .json sidecar")
    p.add_argument("--save-frames", help="write the codes as int64 .npy [takes, frames, 8]")
    p.add_argument("--preset", help="a preset name from presets/ or a YAML file; flags override it")
    p.add_argument("--max-audio-length-ms", type=int, default=None, help=f"default {d.max_audio_length_ms}")
    p.add_argument("--cfg-scale", type=float, default=None, help=f"default {d.cfg_scale}")
    p.add_argument("--temperature", type=float, default=None, help=f"default {d.temperature}")
    p.add_argument("--topk", type=int, default=None, help=f"default {d.topk}")
    p.add_argument("--seed", type=int, default=None, help="default: a fresh random seed (printed)")
    p.add_argument("--takes", type=int, default=None, help=f"default {d.takes}")
    p.add_argument("--ignore-eos", action="store_true", default=None, help="run to the full length")
    p.add_argument("--codec-steps", type=int, default=None, help=f"default {d.codec_steps}")
    p.add_argument("--codec-guidance-scale", type=float, default=None, help=f"default {d.codec_guidance_scale}")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, xpu or mps (with :index)")
    p.add_argument("--codec-device", default=None, help="put the codec on another device")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--lazy-load", action="store_true", help="free each model right after use")
    p.set_defaults(func=_generate)


def _options_from_args(args):
    from dataclasses import replace

    from .generate import GenerateOptions
    from .presets import load_preset

    opts = load_preset(args.preset).generate if args.preset else GenerateOptions()
    given = {f.name: getattr(args, f.name) for f in fields(GenerateOptions) if getattr(args, f.name, None) is not None}
    return replace(opts, **given)


def _generate(args) -> int:
    from .engine import GenerationCancelled, load_engine
    from .songs import save_frames, save_take, take_paths

    lyrics = read_text_arg(args.lyrics, "lyrics")
    tags = read_text_arg(args.tags, "tags")
    opts = _options_from_args(args)
    if args.save_path:
        from .audio import WRITE_FORMATS

        if Path(args.save_path).suffix.lower() not in WRITE_FORMATS:
            raise ValueError(f"--save-path {args.save_path}: use a .mp3, .wav or .flac file name")
    engine = load_engine(
        args.model_path, version=args.version, device=args.device, codec_device=args.codec_device,
        dtype=args.dtype, lazy_load=args.lazy_load, preload=False,
    )
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl-C stops cleanly, keeps nothing half-written
    bar = ProgressBar()
    try:
        if args.save_path:
            result = engine.generate(lyrics, tags, opts, on_progress=bar, should_stop=stop.is_set)
            frames, seeds = result.frames, result.seeds
        else:
            fr = engine.generate_frames(lyrics, tags, opts, on_progress=bar, should_stop=stop.is_set)
            if fr.stopped:
                raise GenerationCancelled("stopped", partial=fr)
            frames, seeds = fr.frames, fr.seeds
    except GenerationCancelled:
        print("\nstopped: nothing was written", file=sys.stderr)
        return 130
    sys.stderr.write("\n")
    print(f"seeds: {' '.join(map(str, seeds))}; frames per take: {' '.join(str(len(f)) for f in frames)}")
    if args.save_frames:
        print(f"frames: {save_frames(args.save_frames, frames)}")
    if args.save_path:
        for i, path in enumerate(take_paths(args.save_path, len(frames))):
            audio_path, side = save_take(result, i, path)
            print(f"song: {audio_path} ({result.audio[i].shape[-1] / result.sample_rate:.2f} s), sidecar: {side}")
        print(
            f"frames/s {result.frames_per_s:.1f}, generation {result.prompt_s + result.frames_s:.2f} s, "
            f"decode {result.decode_s:.2f} s, total {result.total_s:.2f} s"
        )
    return 0


def _add_transcribe(sub) -> None:
    p = sub.add_parser("transcribe", help="a track -> lyrics with timestamps", add_help=False)
    p.set_defaults(func=None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "transcribe":  # its own parser lives with it
        from .transcribe import cli

        return cli(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m heartmula", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_transcribe(sub)
    from . import doctor, download

    doctor.add_parser(sub)
    download.add_parser(sub)
    args = parser.parse_args(argv)
    return run_guarded(args.func, args)


def run_guarded(func, *args) -> int:
    """Run a command; expected failures become one line on stderr, never a traceback."""
    from .audio import AudioFileError
    from .checkpoint import CheckpointError

    try:
        return int(func(*args) or 0)
    except (ValueError, CheckpointError, AudioFileError, FileNotFoundError, PermissionError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
