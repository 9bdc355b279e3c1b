"""Reliability (issue 6): bad prompts, bad files, out of device memory, cancellation in every
phase and nothing lost on a full disk, through the engine, the studio's handlers and the CLI.

Faults are injected at the boundaries only: a model forward (or the Whisper generate call)
raising the real `torch.OutOfMemoryError` once, and an `OSError(ENOSPC)` from a file write.
Generation runs on the demo bundle (8192 positions, never ends early) with 1 s songs.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
import torch

from heartmula import GenerateOptions, History, LiveStats, load_engine
from heartmula.__main__ import main as cli_main
from heartmula.audio import AudioFileError
from heartmula.demo import ensure_demo_bundle
from heartmula.asr.transcribe import TranscribeOptions
from heartmula.library.presets import Preset, delete_preset, load_all, save_preset
from heartmula.asr.transcribe import MAX_AUDIO_S, Transcriber, TranscriptionCancelled, _load_mono_16k
from ui.errors import user_errors
from ui.handlers import generate as generate_h
from ui.handlers import transcribe as transcribe_h
from ui.session import Session
from ui.studio import Studio

SHORT = GenerateOptions(max_audio_length_ms=1000, seed=3, codec_steps=2)  # 12 frames, one codec window
OOM_ADVICE = "fewer takes, a shorter length, or lazy load"


@pytest.fixture(scope="module")
def demo_path():
    return ensure_demo_bundle()


@pytest.fixture(scope="module")
def engine(demo_path):
    return load_engine(str(demo_path), version="demo", device="cpu")


@pytest.fixture()
def studio(engine, tmp_path):
    return Studio(engine=engine, history=History(tmp_path / "outputs"), temp_dir=tmp_path / "tmp")


def gen_args(studio, session, *, lyrics="la la la", tags="pop", duration_s=1, cfg=1.5, temperature=1.0, topk=50,
             seed=5, takes=1):
    """The Generate tab's inputs (no preset), its controls as they show values: seconds, a seed as text."""
    shown = dict(max_audio_length_ms=duration_s, cfg_scale=cfg, temperature=temperature, topk=topk,
                 seed=str(seed), takes=takes, ignore_eos=False, codec_steps=10, codec_guidance_scale=1.25)
    return (studio, session, lyrics, tags, *[shown[n] for n in generate_h.GEN_NAMES])


def run(fn, *args):
    out = user_errors(fn)(*args)
    return list(out) if not isinstance(out, dict) else [out]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def caches_freed(engine) -> bool:
    return not engine._ready and (engine.mula is None or engine.mula.backbone.cache_len == 0)


class OOMOnce:
    """Wraps a callable; its `at`-th call raises torch.OutOfMemoryError (the real type), once."""

    def __init__(self, fn, at: int = 1):
        self.fn, self.at, self.calls = fn, at, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return self.fn(*args, **kwargs)


# ----- 1. bad prompts ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, words", [
    (dict(lyrics=""), "lyrics are empty"),
    (dict(lyrics=" \n\t "), "lyrics are empty"),
    (dict(lyrics="\x00\x01\x1b\u200b"), "lyrics are empty"),  # only control characters
    (dict(tags="   "), "tags are empty"),
    (dict(lyrics="a" * 50_000), "the limit is 20000"),
    (dict(tags="rock " * 10_000), "the limit is 1000"),
    (dict(duration_s=0.05), "max_audio_length_s=0.05 is out of range; allowed: 0.08 to 600 s"),
    (dict(duration_s=10_000), "max_audio_length_s=10000 is out of range; allowed: 0.08 to 600 s"),
    (dict(duration_s=float("nan")), "max_audio_length_s must be a finite number"),
    (dict(seed=2**64), "seed=18446744073709551616 is out of range; allowed: 0 to"),
    (dict(temperature=99), "temperature=99.0 is out of range; allowed: 0.05 to 5.0"),
    (dict(temperature=float("inf")), "temperature must be a finite number"),
    (dict(topk=0), "topk=0 is out of range; allowed: 1 to 8192"),
    (dict(topk=float("inf")), "topk must be a finite number"),  # was an OverflowError: "Internal error"
    (dict(takes=float("-inf")), "takes must be a finite number"),
    (dict(cfg=0.2), "cfg_scale=0.2 is out of range; allowed: 1.0 to 10.0"),
    (dict(takes=9), "takes=9 is out of range; allowed: 1 to 8"),
])
def test_bad_prompts_and_options_in_the_ui(studio, kwargs, words):
    with pytest.raises(gr.Error) as e:
        run(generate_h.generate, *gen_args(studio, Session(), **kwargs))
    assert words in str(e.value) and "Traceback" not in str(e.value)
    assert files_in(studio.history.folder) == []


def test_prompt_longer_than_the_context_names_the_limit(tiny_ckpt, tmp_path):
    engine = load_engine(str(tiny_ckpt), version="tiny", device="cpu")  # 256 positions
    studio = Studio(engine=engine, history=History(tmp_path / "out"), temp_dir=tmp_path / "tmp")
    with pytest.raises(gr.Error, match=r"the prompt takes \d+ of the model's 256 positions, which leaves room "
                                       r"for [\d.]+ s of audio.*shorten the lyrics or the length"):
        run(generate_h.generate, *gen_args(studio, Session(), lyrics="hello world " * 40, duration_s=15))
    assert caches_freed(engine) and files_in(tmp_path / "out") == []
    # a prompt that alone fills the context: no room at all
    with pytest.raises(ValueError, match="leaves room for 0.0 s"):
        engine.generate("word " * 300, "pop", SHORT)


@pytest.mark.parametrize("flags, words", [
    (["--lyrics", " "], "lyrics are empty"),
    (["--lyrics", "x" * 50_000], "the limit is 20000"),
    (["--temperature", "99"], "allowed: 0.05 to 5.0"),
    (["--temperature", "nan"], "temperature must be a finite number, got nan"),
    (["--topk", "0"], "allowed: 1 to 8192"),
    (["--seed", "-1"], "allowed: 0 to"),
    (["--max-audio-length-ms", "5000000"], "allowed: 80 to 600000"),
    (["--max-audio-length-ms", "20000", "--lyrics", "la " * 60], "shorten the lyrics or the length"),
])
def test_bad_prompts_in_the_cli(tiny_ckpt, tmp_path, capsys, flags, words):
    argv = ["generate", "--model-path", str(tiny_ckpt), "--version", "tiny", "--device", "cpu", "--tags", "pop",
            "--lyrics", "la la", "--max-audio-length-ms", "800", "--save-path", str(tmp_path / "song.wav")]
    argv += flags  # later flags win
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert files_in(tmp_path) == []


# ----- 2. bad files --------------------------------------------------------------------------------
def _tone(seconds: float, rate: int, channels: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * 330 * (c + 1) * t) for c in range(channels)], axis=1)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-files")
    (d / "text.mp3").write_text("this is not audio, just a renamed text file\n" * 20)
    (d / "empty.wav").write_bytes(b"")
    sf.write(d / "full.mp3", _tone(3, 44100, 2), 44100, format="MP3")
    data = (d / "full.mp3").read_bytes()
    (d / "truncated.mp3").write_bytes(data[: len(data) // 2])
    (d / "header-only.mp3").write_bytes(data[:300])
    with sf.SoundFile(d / "hour.wav", "w", 8000, 1, subtype="PCM_U8") as f:  # 60 minutes, 29 MB
        block = np.zeros((8000 * 60, 1), np.float32)
        for _ in range(60):
            f.write(block)
    sf.write(d / "hires.wav", _tone(2, 96_000, 6), 96_000, subtype="PCM_U8")  # 96 kHz, 6 channels, 8-bit
    return d


@pytest.mark.parametrize("name, words", [
    ("text.mp3", "not a readable audio file"),
    ("empty.wav", "the file is empty (0 bytes)"),
    ("header-only.mp3", "not a readable audio file"),
    ("hour.wav", f"the audio is 60.0 minutes long; the limit is {MAX_AUDIO_S // 60} minutes"),
    ("missing.wav", "no such file"),
])
def test_bad_files_are_refused_clearly(bad_files, studio, name, words):
    with pytest.raises(AudioFileError, match=words.replace("(", r"\(").replace(")", r"\)")):
        _load_mono_16k(bad_files / name, None)
    with pytest.raises(gr.Error) as e:  # the Transcribe tab: the same message, before any model loads
        run(transcribe_h.transcribe, studio, Session(), str(bad_files / name), 8, 30, "")
    assert words in str(e.value) and "Traceback" not in str(e.value)
    assert not studio.transcriber_loaded


def test_odd_but_valid_files_are_handled(bad_files):
    mono = _load_mono_16k(bad_files / "hires.wav", None)  # 96 kHz, 6 channels, 8-bit -> 16 kHz mono
    assert mono.ndim == 1 and abs(mono.size - 2 * 16_000) <= 16 and 0.01 < np.abs(mono).max() <= 1.0
    cut = _load_mono_16k(bad_files / "truncated.mp3", None)  # decodes what is there
    assert cut.ndim == 1 and 0 < cut.size <= 3 * 16_000 + 16


def test_long_clip_is_refused_without_decoding_it(bad_files, monkeypatch):
    import heartmula.audio as audio

    def no_decoding(*a, **k):
        raise AssertionError("the 60-minute file was decoded before its length was checked")

    monkeypatch.setattr(audio.np, "concatenate", no_decoding)
    with pytest.raises(AudioFileError, match="60.0 minutes"):
        audio.read_mono(bad_files / "hour.wav", MAX_AUDIO_S)


# ----- 3. out of device memory ---------------------------------------------------------------------
@pytest.mark.parametrize("phase, at", [("prompt", 1), ("frames", 4)])
def test_oom_in_the_language_model_frees_and_the_next_job_works(engine, monkeypatch, phase, at):
    engine.load()
    fault = OOMOnce(engine.mula.backbone.forward, at=at)  # call 1 is the prompt step, then one per frame
    monkeypatch.setattr(engine.mula.backbone, "forward", fault)
    with pytest.raises(RuntimeError, match=OOM_ADVICE) as e:
        engine.generate("la la", "pop", SHORT)
    assert isinstance(e.value.__cause__, torch.OutOfMemoryError)
    assert caches_freed(engine)
    assert engine.generate("la la", "pop", SHORT).durations_s == [pytest.approx(0.96)]


def test_oom_while_decoding_frees_and_the_next_job_works(engine, monkeypatch):
    engine.load()
    estimator = engine.codec.flow_matching.estimator
    monkeypatch.setattr(estimator, "forward", OOMOnce(estimator.forward))
    frames = engine.generate_frames("la la", "pop", SHORT).frames
    with pytest.raises(RuntimeError, match=OOM_ADVICE):  # Engine.decode on its own, as well as in generate
        engine.decode(frames, SHORT)
    monkeypatch.setattr(estimator, "forward", OOMOnce(estimator.forward.fn))
    with pytest.raises(RuntimeError, match=OOM_ADVICE) as e:
        engine.generate("la la", "pop", SHORT)
    assert "out of memory" in str(e.value) and str(e.value).count("out of memory") == 1  # not wrapped twice
    assert caches_freed(engine)
    assert len(engine.generate("la la", "pop", SHORT).audio) == 1


def test_oom_with_lazy_load_unloads_both_models(demo_path, monkeypatch):
    engine = load_engine(str(demo_path), version="demo", device="cpu", lazy_load=True)
    engine._ensure_mula()
    monkeypatch.setattr(engine.mula.backbone, "forward", OOMOnce(engine.mula.backbone.forward, at=3))
    with pytest.raises(RuntimeError, match=OOM_ADVICE):
        engine.generate("la la", "pop", SHORT)
    assert engine.mula is None and engine.codec is None  # lazy: nothing stays in device memory
    assert len(engine.generate("la la", "pop", SHORT).audio) == 1


def test_oom_in_the_ui_is_a_clear_message_and_nothing_is_saved(studio, monkeypatch):
    studio.engine.load()
    backbone = studio.engine.mula.backbone
    monkeypatch.setattr(backbone, "forward", OOMOnce(backbone.forward, at=2))
    outs = []
    with pytest.raises(gr.Error, match=OOM_ADVICE):
        for out in user_errors(generate_h.generate)(*gen_args(studio, Session())):
            outs.append(out)
    assert "Not done: the device ran out of memory" in outs[-1]["status"]
    assert files_in(studio.history.folder) == [] and caches_freed(studio.engine)
    assert "audios" in run(generate_h.generate, *gen_args(studio, Session()))[-1]  # the next job works


def test_oom_in_the_cli_is_one_line(tiny_ckpt, tmp_path, capsys, monkeypatch):
    from heartmula.mula.model import Llama  # the backbone's class (the CLI builds its own engine)

    fault = OOMOnce(Llama.forward)
    monkeypatch.setattr(Llama, "forward", lambda self, *a, **k: fault(self, *a, **k))
    code = cli_main(["generate", "--model-path", str(tiny_ckpt), "--version", "tiny", "--device", "cpu",
                     "--lyrics", "la la", "--tags", "pop", "--max-audio-length-ms", "800",
                     "--save-path", str(tmp_path / "song.wav")])
    err = capsys.readouterr().err
    assert code == 1 and "error: the device ran out of memory; try fewer takes" in err and "Traceback" not in err
    assert files_in(tmp_path) == []


def test_oom_while_transcribing_frees_and_the_next_works(demo_transcriber, monkeypatch):
    rate = 16_000
    clip = (0.2 * np.sin(2 * np.pi * 220 * np.arange(2 * rate) / rate)).astype(np.float32)
    model = demo_transcriber._model
    monkeypatch.setattr(model, "generate", OOMOnce(model.generate))
    with pytest.raises(RuntimeError, match="lower batch size, a shorter chunk length, or unload") as e:
        demo_transcriber.transcribe(clip, TranscribeOptions(batch_size=4), sample_rate=rate)
    assert isinstance(e.value.__cause__, torch.OutOfMemoryError)
    result = demo_transcriber.transcribe(clip, TranscribeOptions(batch_size=4), sample_rate=rate)
    assert result.duration_s == pytest.approx(2.0)


# ----- 4. cancellation ---------------------------------------------------------------------------
class CancelWhen(LiveStats):
    """The studio's live stats, plus: press Stop the moment a progress report matches `when`
    (progress reports reach it from the job's own thread, so the timing is exact)."""

    def __init__(self, session: Session, when):
        super().__init__()
        self.session, self.when, self.pressed = session, when, False

    def progress(self, p) -> None:
        super().progress(p)
        if not self.pressed and self.when(p):
            self.pressed = True
            self.session.cancel.set()


@pytest.mark.parametrize("phase, when", [
    ("prompt", lambda p: p.phase == "prompt"),
    ("frames", lambda p: p.phase == "frames" and p.done < p.total),
    ("decode", lambda p: p.phase == "frames" and p.done == p.total),  # seen by the decoder's first check
])
@pytest.mark.parametrize("lazy", [False, True])
def test_stop_in_every_phase_frees_and_keeps_nothing(demo_path, tmp_path, phase, when, lazy):
    engine = load_engine(str(demo_path), version="demo", device="cpu", lazy_load=lazy)
    session = Session()
    studio = Studio(engine=engine, history=History(tmp_path / "outputs"), temp_dir=tmp_path / "tmp",
                    stats=CancelWhen(session, when))
    # 3 s: 37 frames, progress every 8, so "frames" stops mid-way
    outs = run(generate_h.generate, *gen_args(studio, session, duration_s=3, takes=2))
    # tester: "Nothing was saved." read against the note "What was made stays playable below"
    assert studio.stats.pressed and outs[-1]["status"] == "⏹ Stopped: not saved to History."
    assert not any(a.get("visible") for o in outs for a in o.get("audios", []))  # no take shown as made
    assert session.last_song_ids == []  # nor one the result buttons could act on
    assert files_in(tmp_path / "outputs") == [] and studio.history.scan() == ([], [])
    # the page is told at once; a codec window under way finishes in the background, then frees
    assert engine.wait_idle(timeout=120)
    assert caches_freed(engine)
    if lazy:
        assert engine.mula is None and engine.codec is None
    session.cancel.clear()
    studio.stats.pressed = True  # no more stops: the next job runs to the end
    assert "audios" in run(generate_h.generate, *gen_args(studio, session))[-1]


def test_stop_while_decoding_in_the_engine(engine):
    calls = []

    def stop_once_decoding(p=None):
        return bool(calls)

    from heartmula import GenerationCancelled

    with pytest.raises(GenerationCancelled) as e:
        engine.generate("la la", "pop", SHORT, on_progress=lambda p: calls.append(p) if p.phase == "decode" or
                        (p.phase == "frames" and p.done == p.total) else None, should_stop=stop_once_decoding)
    assert "decoding" in str(e.value) and caches_freed(engine)


class StopAfter(threading.Event):
    """A session's cancel flag that the Stop button "presses" on its n-th look."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.looks = n, 0

    def is_set(self) -> bool:
        self.looks += 1
        return self.looks >= self.n or super().is_set()


def test_stop_while_transcribing_keeps_no_files(studio, demo_transcriber, speak, tmp_path, monkeypatch):
    clip = speak(["one two three four five six seven"], tmp_path / "clip.wav")
    monkeypatch.setattr(studio, "transcriber", lambda: demo_transcriber)
    session = Session()
    session.cancel = StopAfter(4)  # a few decoding steps in
    outs = run(transcribe_h.transcribe, studio, session, str(clip), 8, 30, "")
    assert outs[-1]["speed"] == "⏹ Stopped. Nothing was saved." and session.cancel.looks >= 4
    assert not any("text" in o for o in outs) and files_in(studio.temp_dir) == []
    with pytest.raises(TranscriptionCancelled):
        demo_transcriber.transcribe(str(clip), should_stop=StopAfter(2).is_set)
    assert demo_transcriber.transcribe(str(clip)).text  # the next transcription works


# ----- 5. nothing lost ---------------------------------------------------------------------------
class DiskFull:
    """Make the n-th call of `fn` write half its data, then fail as a full disk does."""

    def __init__(self, fn, at: int):
        self.fn, self.at, self.calls = fn, at, 0

    def __call__(self, file, *args, **kwargs):
        if not isinstance(file, (str, os.PathLike)):  # in-memory encoding (the live player's pieces)
            return self.fn(file, *args, **kwargs)
        self.calls += 1
        if self.calls == self.at:
            Path(file).write_bytes(b"RIFF" + b"\0" * 64)  # the partial file a full disk leaves
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return self.fn(file, *args, **kwargs)


@pytest.fixture(scope="module")
def two_takes(engine):
    from dataclasses import replace

    return engine.generate("la la", "pop", replace(SHORT, takes=2))


@pytest.mark.parametrize("at", [1, 4, 6])  # 3 formats x 2 takes: the first write, take 2's first, the last
def test_full_disk_while_saving_audio_keeps_nothing(two_takes, tmp_path, monkeypatch, at):
    monkeypatch.setattr(sf, "write", DiskFull(sf.write, at))
    history = History(tmp_path / "outputs")
    with pytest.raises(RuntimeError, match="could not save the song in .*No space left on device; nothing was kept"):
        history.save(two_takes)
    assert files_in(tmp_path / "outputs") == [] and history.scan() == ([], [])


def test_full_disk_while_writing_a_sidecar_keeps_nothing(two_takes, tmp_path, monkeypatch):
    import heartmula.audio as audio

    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # take 2's sidecar: take 1 is already complete on disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(audio.os, "fsync", fsync)
    history = History(tmp_path / "outputs")
    with pytest.raises(RuntimeError, match="No space left on device"):
        history.save(two_takes)
    assert files_in(tmp_path / "outputs") == []  # no half-listed song: take 1 went too
    monkeypatch.setattr(audio.os, "fsync", real_fsync)
    assert len(history.save(two_takes)) == 2 and len(history.list()) == 2


def test_full_disk_in_the_ui_and_cli(studio, tiny_ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sf, "write", DiskFull(sf.write, 2))
    with pytest.raises(gr.Error, match="No space left on device; nothing was kept"):
        run(generate_h.generate, *gen_args(studio, Session()))
    assert files_in(studio.history.folder) == []
    monkeypatch.setattr(sf, "write", DiskFull(sf.write.fn, 1))
    out = tmp_path / "cli"
    code = cli_main(["generate", "--model-path", str(tiny_ckpt), "--version", "tiny", "--device", "cpu",
                     "--lyrics", "la la", "--tags", "pop", "--max-audio-length-ms", "800",
                     "--codec-steps", "2", "--save-path", str(out / "song.mp3")])
    err = capsys.readouterr().err
    assert code == 1 and "No space left on device" in err and "Traceback" not in err
    assert files_in(out) == []


def test_full_disk_while_saving_a_preset_keeps_the_old_one(tmp_path, monkeypatch):
    import heartmula.audio as audio

    preset = Preset("mine", GenerateOptions(temperature=0.7), TranscribeOptions(), "first")
    path = save_preset(preset, tmp_path)
    before = path.read_bytes()
    monkeypatch.setattr(audio.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    with pytest.raises(RuntimeError, match="could not save preset 'mine'.*No space left"):
        save_preset(Preset("mine", GenerateOptions(temperature=0.9), TranscribeOptions(), "second"), tmp_path)
    assert path.read_bytes() == before and files_in(tmp_path) == ["mine.yaml"]


def test_corrupt_presets_are_skipped_with_a_warning(tmp_path):
    (tmp_path / "good.yaml").write_text("temperature: 0.8\n")
    (tmp_path / "garbage.yaml").write_bytes(b"\xff\xfe\x00 not yaml {{{")
    (tmp_path / "numbers.yaml").write_text("1: 2\ntemperature: 0.5\n")  # a number as a key: was a TypeError
    (tmp_path / "code.yaml").write_text(f"!!python/object/apply:os.system ['touch {tmp_path}/pwned']\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "range.yaml").write_text("temperature: .nan\n")
    presets, warnings = load_all([tmp_path])
    assert list(presets) == ["good"] and presets["good"].generate.temperature == 0.8
    assert len(warnings) == 5 and all(".yaml" in w for w in warnings)
    assert not (tmp_path / "pwned").exists()  # safe_load: YAML never runs code


def test_preset_names_never_reach_outside_the_folder(tmp_path):
    victim = tmp_path / "victim.yaml"
    victim.write_text("temperature: 1.0\n")
    folder = tmp_path / "presets"
    folder.mkdir()
    for name in ("../victim", "..", "/etc/passwd", ".hidden"):
        with pytest.raises(ValueError, match="preset name"):
            delete_preset(name, folder)
    assert victim.exists()
