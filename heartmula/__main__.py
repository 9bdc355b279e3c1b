"""Command line: python -m heartmula {generate,queue,transcribe,doctor,download} ...

Option flags are built from the option declarations (heartmula/options.py): each carries
its field's name, help and range. Bad input prints one line on stderr and exits with
status 2; nothing the user asked for is half-written.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

EXIT_USAGE = 2


TEXT_FILE_SUFFIXES = (".txt", ".lrc", ".md")


def read_text_arg(value: str, flag: str) -> str:
    """A flag that takes text, the path of a UTF-8 text file holding it, or - for standard input.

    A value that looks like a file name (one line, no spaces, ending in .txt/.lrc/.md or with a
    path separator) but names no file is a mistake, not lyrics: it is refused, naming the file."""
    if value == "-":
        return sys.stdin.read()
    one_line = "\n" not in value and len(value) < 4096
    path = Path(value).expanduser() if one_line else None
    try:
        if path is not None and path.is_file():
            return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{flag} {value}: cannot read it as UTF-8 text ({e})") from e
    looks_like_path = one_line and not any(c.isspace() for c in value.strip()) and (
        value.lower().endswith(TEXT_FILE_SUFFIXES) or os.sep in value or "/" in value)
    if looks_like_path:
        raise ValueError(f"{flag} {value}: no such file (give an existing file, the text itself, or - for standard input)")
    return value


def add_option_flags(p: argparse.ArgumentParser, cls) -> None:
    """One flag per declared option of `cls`, named after the field (--max-audio-length-ms), in
    the stored unit. Defaults are None, so a preset underneath keeps what no flag sets."""
    from .options import help_text, options_of

    defaults = cls()
    for name, opt in options_of(cls).items():
        flag = "--" + name.replace("_", "-")
        text = help_text(name, opt, getattr(defaults, name))
        if opt.kind is bool:
            p.add_argument(flag, action="store_true", default=None, help=text)
        else:
            p.add_argument(flag, type=_flag_type(name, opt), default=None, metavar=name.upper(), help=text)


def _flag_type(name: str, opt):
    """argparse's `type` for an option flag: the option's own parse (1e9 is a whole number, 2.5
    is not), whose error argparse prints after the flag, with the declared range added (its
    own "invalid int value: 'abc'" said neither what was wanted nor where). The range itself is
    checked once, with the other options, by the options class."""
    from .options import parse_number

    if opt.kind not in (int, float):
        return opt.kind

    def parse(text: str):
        try:
            return parse_number(name, opt, text)
        except ValueError as e:
            message = str(e) if opt.range_text() in str(e) else f"{e}; allowed: {opt.range_text()}"
            raise argparse.ArgumentTypeError(message) from None

    parse.__name__ = opt.kind.__name__
    return parse


def options_from_args(args, cls, base=None):
    """`base` (or the defaults) with every option flag that was given."""
    from dataclasses import replace

    from .options import options_of

    given = {name: getattr(args, name) for name in options_of(cls) if getattr(args, name, None) is not None}
    return replace(base if base is not None else cls(), **given)


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
    from .accel.device import DEVICE_SYNTAX, parse_device_arg

    p.add_argument("--device", "--mula-device", dest="device", default="auto", type=parse_device_arg,
                   help=f"the language model's device: {DEVICE_SYNTAX}")
    p.add_argument("--codec-device", default=None, type=parse_device_arg,
                   help="put the codec on another device (default: the same)")


def _add_quant_arg(p) -> None:
    from .mula.quant import QUANT_MODES

    # None: a --preset's `quant`, else "none" (see _quant)
    p.add_argument("--quant", default=None, choices=QUANT_MODES,
                   help="int8: the language model's weights as int8 with per-row scales (about half its "
                        "memory; on CUDA also faster: 1.2-1.3x on an H200; experimental until "
                        "checked on the real checkpoint); "
                        "default: the preset's quant, else none")


def _quant(args) -> str:
    """--quant, else the --preset's `quant` key, else no quantization."""
    if args.quant is not None:
        return args.quant
    if getattr(args, "preset", None):
        from .library.presets import load_preset

        return load_preset(args.preset).quant or "none"
    return "none"


def _add_model_args(p) -> None:
    p.add_argument("--model-path", default=None,
                   help="checkpoint folder (official layout); default ./ckpt, or the demo weights where it lacks the model")
    p.add_argument("--version", default=None, help="HeartMuLa version: the X of HeartMuLa-oss-X (default 3B)")
    p.add_argument("--demo", action="store_true", help="run on the demo weights (tiny, random: noise, not music)")


def _model(args):
    """The checkpoint to load (the demo bundle where ./ckpt lacks the model), with its banner."""
    from .demo import choose_model

    choice = choose_model(args.model_path, args.version, args.demo)
    if choice.demo:
        print(choice.note or "demo weights: noise, not music", file=sys.stderr)
    return choice


def _add_generate(sub) -> None:
    from .mula.generate import GenerateOptions

    p = sub.add_parser("generate", help="lyrics + tags -> frames and a song")
    _add_model_args(p)
    p.add_argument("--lyrics", required=True, help="lyrics text, a file holding them, or - for standard input")
    p.add_argument("--tags", required=True, help="comma-separated style tags, a file holding them, or -")
    p.add_argument("--save-path", help="write the song here (.mp3, .wav or .flac) with a .json sidecar")
    p.add_argument("--save-frames", help="write the codes as int64 .npy [takes, frames, 8]")
    p.add_argument("--preset", help="a preset name from presets/ or a YAML file; flags override it")
    add_option_flags(p, GenerateOptions)
    _add_device_args(p)
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    p.add_argument("--lazy-load", action="store_true", help="free each model right after use")
    _add_quant_arg(p)
    p.set_defaults(func=_generate)


def _options_from_args(args):
    from .library.presets import load_preset
    from .mula.generate import GenerateOptions

    return options_from_args(args, GenerateOptions, load_preset(args.preset).generate if args.preset else None)


def _generate(args) -> int:
    from .engine import GenerationCancelled, load_engine
    from .library.songs import save_frames, save_take, take_paths

    lyrics = read_text_arg(args.lyrics, "--lyrics")
    tags = read_text_arg(args.tags, "--tags")
    opts = _options_from_args(args)
    if args.save_path:
        from .audio import WRITE_FORMATS

        if Path(args.save_path).suffix.lower() not in WRITE_FORMATS:
            raise ValueError(f"--save-path {args.save_path}: use a .mp3, .wav or .flac file name")
    model = _model(args)
    engine = load_engine(
        model.model_path, version=model.version, device=args.device, codec_device=args.codec_device,
        dtype=args.dtype, lazy_load=args.lazy_load, quant=_quant(args), preload=False,
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


def _add_continue(sub) -> None:
    for mode, text in (("extend", "add seconds to a song made earlier (given by its .json sidecar)"),
                       ("regenerate", "keep a song up to a point and draw the rest again, with new seeds")):
        p = sub.add_parser(mode, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("--from", dest="source", required=True,
                       help="the song's .json sidecar (written beside its audio by generate or the studio)")
        if mode == "extend":
            p.add_argument("--seconds", type=float, required=True, help="how many seconds to add")
            p.add_argument("--ignore-eos", action="store_true",
                           help="run the whole --seconds even where the model would end the song")
        else:
            p.add_argument("--at", required=True, help="where the new part starts: m:ss (e.g. 1:20) or seconds")
            p.add_argument("--takes", type=int, default=1, help="how many new versions (take i uses seed + i)")
            p.add_argument("--seed", type=int, default=None, help="seed of the new part (default: a fresh one)")
        p.add_argument("--lyrics", default=None, help="lyrics for the prompt (text, a file or -); default the song's")
        p.add_argument("--tags", default=None, help="tags for the prompt (text, a file or -); default the song's")
        p.add_argument("--save-path", required=True, help="where to write the new song (.mp3, .wav or .flac)")
        _add_model_args(p)
        _add_device_args(p)
        p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
        _add_quant_arg(p)
        p.set_defaults(func=_continue, mode=mode)


def _continue(args) -> int:
    import json
    from dataclasses import replace

    from .audio import WRITE_FORMATS
    from .engine import GenerationCancelled, load_engine
    from .library.songs import clock, load_codes, plan_continuation, save_take, take_paths

    source = Path(args.source).expanduser()
    try:
        meta = json.loads(source.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"--from {source}: not a song's sidecar ({e})") from e
    if not meta.get("codes_file"):
        raise ValueError(f"--from {source}: this song was saved without its codes (before they were kept), "
                         "so it can be played but not extended or regenerated")
    frames = load_codes(source.parent / Path(str(meta["codes_file"])).name)
    if Path(args.save_path).suffix.lower() not in WRITE_FORMATS:
        raise ValueError(f"--save-path {args.save_path}: use a .mp3, .wav or .flac file name")
    try:
        plan = plan_continuation(
            meta, frames, args.mode, parent_id=source.stem, seconds=getattr(args, "seconds", None),
            at=getattr(args, "at", None), takes=getattr(args, "takes", 1), seed=getattr(args, "seed", None),
            lyrics=read_text_arg(args.lyrics, "--lyrics") if args.lyrics is not None else None,
            tags=read_text_arg(args.tags, "--tags") if args.tags is not None else None,
            ignore_eos=getattr(args, "ignore_eos", False))
    except ValueError as e:
        flag = "--at" if args.mode == "regenerate" and str(e).startswith("time") else f"--from {source}"
        raise ValueError(f"{flag}: {e}") from e
    model = _model(args)
    made_with = (meta.get("model") or {}).get("heartmula_version")
    if made_with and made_with != model.version:
        raise ValueError(f"--from {source}: the song was made with HeartMuLa {made_with}, but {model.version} "
                         f"is loaded; pass --version {made_with} (and its --model-path)")
    engine = load_engine(model.model_path, version=model.version, device=args.device, codec_device=args.codec_device,
                         dtype=args.dtype, quant=_quant(args), preload=False)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        result = engine.generate(plan.lyrics, plan.tags, plan.options, kept=[plan.kept], codec_seeds=plan.codec_seeds,
                                 on_progress=ProgressBar(), should_stop=stop.is_set)
    except GenerationCancelled:
        print("\nstopped: nothing was written", file=sys.stderr)
        return 130
    sys.stderr.write("\n")
    result = replace(result, parent={**plan.parent, "sidecar": source.name})
    for i, path in enumerate(take_paths(args.save_path, plan.options.takes)):
        audio_path, side = save_take(result, i, path)
        print(f"song: {audio_path} ({result.durations_s[i]:.2f} s, {args.mode} of {source.name} at "
              f"{clock(plan.parent['at_s'])}, seed {result.seeds[i]}), sidecar: {side}")
    return 0


def _add_queue(sub) -> None:
    p = sub.add_parser("queue", help="several songs, pipelined: one decodes while the next generates")
    p.add_argument("--songs", required=True,
                   help="a JSON file: a list of {lyrics, tags, and any GenerateOptions field}")
    p.add_argument("--save-dir", required=True, help="folder for song_01.mp3, song_02.mp3, ... and sidecars")
    p.add_argument("--format", default="mp3", choices=["mp3", "wav", "flac"])
    _add_model_args(p)
    _add_device_args(p)
    p.add_argument("--dtype", default="auto")
    _add_quant_arg(p)
    p.set_defaults(func=_queue)


def _queue(args) -> int:
    import json

    from .engine import load_engine
    from .mula.generate import GenerateOptions
    from .options import options_of
    from .pipeline import SongRequest, run_queue
    from .library.songs import save_take, take_paths

    try:
        specs = json.loads(Path(args.songs).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--songs {args.songs}: not a readable JSON file ({e})") from e
    if not isinstance(specs, list) or not specs or not all(isinstance(x, dict) for x in specs):
        raise ValueError(f"--songs {args.songs}: expected a non-empty JSON list of objects")
    option_names = set(options_of(GenerateOptions))
    requests = []
    for i, spec in enumerate(specs):
        unknown = set(spec) - option_names - {"lyrics", "tags"}
        if unknown or "lyrics" not in spec or "tags" not in spec:
            raise ValueError(f"--songs entry {i + 1}: needs lyrics and tags; unknown keys: {sorted(unknown)}")
        try:
            opts = GenerateOptions(**{k: v for k, v in spec.items() if k in option_names})
        except ValueError as e:
            raise ValueError(f"--songs {args.songs}, entry {i + 1}: {e}") from e
        requests.append(SongRequest(spec["lyrics"], spec["tags"], opts))
    model = _model(args)
    engine = load_engine(model.model_path, version=model.version, device=args.device,
                         codec_device=args.codec_device, dtype=args.dtype, quant=_quant(args), preload=False)
    for i, r in enumerate(requests):  # every song is checked before the first one is generated
        try:
            engine.check_request(r.lyrics, r.tags, r.options)
        except ValueError as e:
            raise ValueError(f"--songs {args.songs}, entry {i + 1}: {e}") from e
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
    from .asr.lyrics import FORMATS
    from .asr.transcribe import CHECKPOINT_DIR, TranscribeOptions
    from .asr.whisper_convert import DEMO_MODEL_NAME

    p = sub.add_parser(
        "transcribe", help="a track -> lyrics with timestamps",
        description="Transcribe the lyrics of a song, with timings; optionally check them against "
                    "the lyrics you wrote (word error rate).",
        epilog="The transcript goes to stdout (or --save-path); timing, the real-time factor and the "
               "lyric check go to stderr. Exit status 2 means bad input.")
    p.add_argument("--music-path", required=True, help="audio file: WAV, FLAC, MP3 or OGG")
    p.add_argument("--model-path", default=None,
                   help=f"checkpoint folder holding {CHECKPOINT_DIR}/; without it, {DEMO_MODEL_NAME}")
    add_option_flags(p, TranscribeOptions)
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="output format (default: from --save-path's suffix, else txt)")
    p.add_argument("--save-path", default=None, help="write the transcript to this file")
    p.add_argument("--lyrics", default=None,
                   help="intended lyrics (a file, the text, or -) to compute the word error rate")
    from .accel.device import DEVICE_SYNTAX, parse_device_arg

    p.add_argument("--device", default="auto", type=parse_device_arg, help=DEVICE_SYNTAX)
    p.set_defaults(func=_transcribe)


def _transcribe(args) -> int:
    from .accel.device import is_out_of_memory
    from .asr.lyrics import FORMATS, check_lyrics
    from .asr.transcribe import RTF_LABEL, TranscribeOptions, Transcriber, TranscriptionOutOfMemory, format_transcript
    from .audio import atomic_write_bytes

    fmt = args.format
    save_path = Path(args.save_path).expanduser() if args.save_path else None
    if fmt is None:
        suffix = save_path.suffix.lower().lstrip(".") if save_path else ""
        fmt = suffix if suffix in FORMATS else "txt"
    if save_path is not None and save_path.is_dir():
        raise ValueError(f"--save-path {save_path}: is a folder; give a file name such as {save_path / f'lyrics.{fmt}'}")
    # Everything cheap is checked before a model loads.
    options = options_from_args(args, TranscribeOptions)
    lyrics = read_text_arg(args.lyrics, "--lyrics") if args.lyrics is not None else None
    if lyrics is not None:
        check_lyrics(lyrics, "")  # raises if the lyrics hold no words
    transcriber = Transcriber(args.model_path, device=args.device)
    _quiet_transformers()
    try:  # the file is read and checked before the model loads
        result = transcriber.transcribe(Path(args.music_path).expanduser(), options)
    except RuntimeError as e:
        if is_out_of_memory(e) and not isinstance(e, TranscriptionOutOfMemory):
            raise RuntimeError(f"{e} (out of memory: try a lower --batch-size or --device cpu)") from e
        raise
    output = format_transcript(result, fmt)
    if save_path is not None:
        try:
            atomic_write_bytes(save_path, output.encode("utf-8"))
        except OSError as e:
            raise ValueError(f"--save-path {save_path}: cannot write ({e.strerror or e})") from e
        print(result.text)
    else:
        sys.stdout.write(output)
    note = f" [{result.model_name}]" if result.is_demo else ""
    print(f"audio {result.duration_s:.2f} s, transcribed in {result.elapsed_s:.2f} s on {transcriber.device}, "
          f"{RTF_LABEL}: {result.real_time_factor:.3f}{note}", file=sys.stderr)
    if save_path is not None:
        print(f"saved {fmt} to {save_path}", file=sys.stderr)
    if lyrics is not None:
        check = check_lyrics(lyrics, result.text)
        print(f"word error rate: {check.word_error_rate:.1%} ({check.substitutions} substituted, "
              f"{check.deletions} missing, {check.insertions} extra, of {check.n_intended} intended words)",
              file=sys.stderr)
        print(f"word diff (= same, - intended but not heard, + heard but not intended):\n{check.diff()}",
              file=sys.stderr)
    return 0


def _quiet_transformers() -> None:
    # transformers' Whisper generate() warns about its own internal argument passing on every
    # call; the CLI's users cannot act on that, so keep stderr for our own messages.
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exit status 2 (through main)."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="python -m heartmula", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_generate(sub)
    _add_continue(sub)
    _add_queue(sub)
    _add_transcribe(sub)
    from . import doctor
    from . import download

    doctor.add_parser(sub)
    download.add_parser(sub)
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return int(e.code or 0)
    return run_guarded(args.func, args)


def run_guarded(func, *args) -> int:
    """Run a command; expected failures become one line on stderr, never a traceback."""
    from .audio import AudioFileError
    from .checkpoint import CheckpointError

    try:
        return int(func(*args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ValueError, CheckpointError, AudioFileError, FileNotFoundError, PermissionError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a full disk, a read-only folder: the file and the reason
        print(f"\nerror: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        # An unusable --device is the user's choice (bad input); other setup failures are not.
        return EXIT_USAGE if "was asked for" in str(e) else 1


if __name__ == "__main__":
    sys.exit(main())
