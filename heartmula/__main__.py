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


def _add_device_args(p) -> None:
    p.add_argument("--device", "--mula-device", dest="device", default="auto",
                   help="the language model's device: auto, cpu, cuda, xpu or mps (with :index)")
    p.add_argument("--codec-device", default=None, help="put the codec on another device (default: the same)")


def _add_generate(sub) -> None:
    from .mula.generate import GenerateOptions

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
    _add_device_args(p)
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--lazy-load", action="store_true", help="free each model right after use")
    p.set_defaults(func=_generate)


def _options_from_args(args):
    from dataclasses import replace

    from .mula.generate import GenerateOptions
    from .library.presets import load_preset

    opts = load_preset(args.preset).generate if args.preset else GenerateOptions()
    given = {f.name: getattr(args, f.name) for f in fields(GenerateOptions) if getattr(args, f.name, None) is not None}
    return replace(opts, **given)


def _generate(args) -> int:
    from .engine import GenerationCancelled, load_engine
    from .library.songs import save_frames, save_take, take_paths

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


def _add_queue(sub) -> None:
    p = sub.add_parser("queue", help="several songs, pipelined: one decodes while the next generates")
    p.add_argument("--songs", required=True,
                   help="a JSON file: a list of {lyrics, tags, and any GenerateOptions field}")
    p.add_argument("--save-dir", required=True, help="folder for song_01.mp3, song_02.mp3, ... and sidecars")
    p.add_argument("--format", default="mp3", choices=["mp3", "wav", "flac"])
    p.add_argument("--model-path", default="./ckpt")
    p.add_argument("--version", default="3B")
    _add_device_args(p)
    p.add_argument("--dtype", default="auto")
    p.set_defaults(func=_queue)


def _queue(args) -> int:
    import json

    from .engine import load_engine
    from .mula.generate import GenerateOptions
    from .pipeline import SongRequest, run_queue
    from .library.songs import save_take, take_paths

    try:
        specs = json.loads(Path(args.songs).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--songs {args.songs}: not a readable JSON file ({e})") from e
    if not isinstance(specs, list) or not specs or not all(isinstance(x, dict) for x in specs):
        raise ValueError(f"--songs {args.songs}: expected a non-empty JSON list of objects")
    option_names = {f.name for f in fields(GenerateOptions)}
    requests = []
    for i, spec in enumerate(specs):
        unknown = set(spec) - option_names - {"lyrics", "tags"}
        if unknown or "lyrics" not in spec or "tags" not in spec:
            raise ValueError(f"--songs entry {i + 1}: needs lyrics and tags; unknown keys: {sorted(unknown)}")
        opts = GenerateOptions(**{k: v for k, v in spec.items() if k in option_names})
        requests.append(SongRequest(spec["lyrics"], spec["tags"], opts))
    engine = load_engine(args.model_path, version=args.version, device=args.device,
                         codec_device=args.codec_device, dtype=args.dtype)
    save_dir = Path(args.save_dir)

    def save(i, result):
        for t, path in enumerate(take_paths(save_dir / f"song_{i + 1:02d}.{args.format}", len(result.audio))):
            save_take(result, t, path)
            print(f"song {i + 1}: {path} ({result.durations_s[t]:.1f} s, seed {result.seeds[t]})", flush=True)

    report = run_queue(engine, requests, on_song=save)
    print(f"{len(requests)} songs, {report.audio_s:.1f} s of audio in {report.wall_s:.1f} s: generation "
          f"{report.generate_s:.1f} s, decode {report.decode_s:.1f} s, overlapped {report.overlap_s:.1f} s")
    return 0


def _add_transcribe(sub) -> None:
    p = sub.add_parser("transcribe", help="a track -> lyrics with timestamps", add_help=False)
    p.set_defaults(func=None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "transcribe":  # its own parser lives with it
        from .asr.transcribe import cli

        return cli(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m heartmula", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_queue(sub)
    _add_transcribe(sub)
    from . import doctor
    from . import download

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
    except OSError as e:  # a full disk, a read-only folder: the file and the reason
        print(f"\nerror: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
