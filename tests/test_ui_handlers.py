"""The studio's handlers against the real engine on the tiny checkpoint (no browser).

Handlers are plain functions: they take values and return (or yield) dicts keyed by the
tab's component names; here they run exactly as the UI runs them, through `user_errors`.
"""

from __future__ import annotations

import json

import ast
import subprocess
import sys
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from heartmula import GenerateOptions, History, load_engine, save_preset
from ui.errors import INTERNAL, user_errors
from ui.handlers import common, compare, generate, history, settings, transcribe
from ui.session import Session
from ui.studio import Studio

ROOT = Path(__file__).resolve().parents[1]
LYRICS = "[verse]\nhello world, this is a test\n[chorus]\nsing along with me\n"


@pytest.fixture(scope="module")
def engine(tiny_ckpt):
    return load_engine(str(tiny_ckpt), version="tiny", device="cpu")


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """User presets go to a temporary HEARTMULA_HOME, with one preset that never stops early."""
    monkeypatch.setenv("HEARTMULA_HOME", str(tmp_path / "home"))
    values = dict(max_audio_length_ms=1.6, cfg_scale=1.5, temperature=1.0, topk=50, takes=1, ignore_eos=True,
                  codec_steps=2, codec_guidance_scale=1.25, batch_size=4, chunk_length_s=30)  # as shown: seconds
    settings.save(None, "test-full", "runs to the maximum length",
                  *[values[name] for name in settings.PRESET_FIELDS])
    return tmp_path / "home"


@pytest.fixture()
def studio(engine, tmp_path, home):
    return Studio(engine=engine, history=History(tmp_path / "outputs"), temp_dir=tmp_path / "tmp")


def run(fn, *args):
    """Run a handler as the UI does; return every dict it produced."""
    out = user_errors(fn)(*args)
    return list(out) if not isinstance(out, dict) else [out]


def gen_args(studio, session, *, duration_s=1.6, seed=11, takes=1, lyrics=LYRICS, cfg=1.5):
    """The Generate tab's inputs: its option controls as they show values (length in seconds)."""
    shown = dict(max_audio_length_ms=duration_s, cfg_scale=cfg, temperature=1.0, topk=50,
                 seed="" if seed is None else str(seed), takes=takes, ignore_eos=True, codec_steps=2,
                 codec_guidance_scale=1.25)
    return (studio, session, lyrics, "pop, piano", *[shown[n] for n in generate.GEN_NAMES])


def gen_values(out: dict) -> dict:
    """A handler's values for the Generate tab's option controls, by option name."""
    return dict(zip(generate.GEN_NAMES, out["options"]))


# ----- structure ---------------------------------------------------------------------------------
def test_import_heartmula_leaves_gradio_out():
    code = "import sys, heartmula; assert 'gradio' not in sys.modules, 'gradio imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_ui_never_imports_torch_or_engine_internals():
    files = sorted((ROOT / "ui").rglob("*.py"))
    assert len(files) >= 12
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            for name in names:
                assert name.split(".")[0] != "torch", f"{path} imports {name}"
                assert not name.startswith("heartmula."), f"{path} imports {name}; use names from heartmula"


# ----- Generate ----------------------------------------------------------------------------------
def test_generate_progress_then_takes_saved(studio):
    session = Session()
    outs = run(generate.generate, *gen_args(studio, session, takes=2))
    statuses = [o["status"] for o in outs if "status" in o]
    assert any("Generating frames" in s and "frames/s" in s and "ETA" in s for s in statuses[:-1])
    final = outs[-1]
    shown = [a for a in final["audios"] if a.get("visible")]
    assert len(shown) == 2 and all(not a.get("visible") for a in final["audios"][2:])
    for a in shown:
        audio, rate = sf.read(a["value"])
        assert rate == 48_000 and audio.shape == (20 * 3840, 2)  # 1.6 s = 20 frames, stereo
    suffixes = sorted(Path(p).suffix for p in final["downloads"])
    assert suffixes == sorted([".wav", ".mp3", ".flac", ".json"] * 2)
    assert [m["seed"] for m in final["metadata"]] == [11, 12]
    assert len(studio.history.list()) == 2 and session.last_song_ids
    live = settings.live(studio)["live"]
    assert "frames/s" in live and "not reported" in live and "idle" in live
    assert studio.stats.snapshot().codec_rtf > 0


def test_bad_input_is_a_clear_message(studio):
    cases = [
        (dict(lyrics="   "), "lyrics are empty"),
        (dict(duration_s=0), "max_audio_length_s=0 is out of range; allowed: 0.08 to 600 s"),
        (dict(cfg=0.2), "cfg_scale"),
        (dict(takes=9), "takes"),
    ]
    for kwargs, words in cases:
        with pytest.raises(gr.Error) as e:
            run(generate.generate, *gen_args(studio, Session(), **kwargs))
        assert words in str(e.value) and "Traceback" not in str(e.value)
    assert studio.history.list() == []


def test_unexpected_errors_are_internal(caplog):
    def broken():
        raise KeyError("boom")

    with pytest.raises(gr.Error, match=INTERNAL):
        user_errors(broken)()
    assert "boom" in caplog.text  # the traceback goes to the server log


def test_stop_ends_the_job_and_leaves_no_history(studio):
    session = Session()
    common.start(session)
    outs = user_errors(generate.generate)(*gen_args(studio, session, duration_s=14, takes=8))
    seen = []
    for out in outs:
        seen.append(out)
        if "Generating frames" in out.get("status", ""):
            stopper = threading.Thread(target=common.stop, args=(session,))
            stopper.start()
            stopper.join()
    assert session.cancel.is_set()
    assert not any(a.get("visible") for o in seen for a in o.get("audios", []))  # ended without results
    assert studio.history.list() == [] and studio.stats.snapshot().job is None
    # the engine is free again: the next job runs to the end
    common.start(session)
    assert "audios" in run(generate.generate, *gen_args(studio, session))[-1]


def test_presets_tags_and_seed():
    out = generate.apply_preset("speed")
    values = gen_values(out)
    assert values["max_audio_length_ms"] == 60 and values["cfg_scale"] == 1.5 and "Fastest" in out["preset_info"]
    assert values["seed"] == gr.update()  # a preset tunes; it leaves the seed alone
    with pytest.raises(gr.Error, match="no preset"):
        user_errors(generate.apply_preset)("nope")
    assert generate.add_tag("pop", "piano") == {"tags": "pop, piano", "picker": None}
    assert generate.add_tag("pop, piano", "Piano")["tags"] == "pop, piano"
    assert generate.add_tag("", "rock")["tags"] == "rock"
    assert 0 <= int(generate.random_seed()) < 2**31
    opts = generate.build_options("quality", 3, 2.0, 0.9, 40, " ", 2, False, 20, 1.25)  # blank: a fresh seed
    assert opts.seed is None and opts.codec_steps == 20 and opts.max_audio_length_ms == 3000 and opts.takes == 2
    exact = generate.build_options("quality", 3, 2.0, 0.9, 40, "123456789012345678", 2, False, 20, 1.25)
    assert exact.seed == 123456789012345678  # text, never a float on the way
    assert generate.build_options(None, 0.08, 1.0, 1.0, 8192, "9223372036854775807", 1, True, 1, 1.0).seed == 2**63 - 1
    with pytest.raises(ValueError, match="seed=-1 is out of range; allowed: 0 to"):  # the CLI's words and range
        generate.build_options(None, 3, 1.5, 1.0, 50, "-1", 1, False, 10, 1.25)


# ----- History -----------------------------------------------------------------------------------
def test_history_refresh_select_reuse_delete(studio):
    session = Session()
    run(generate.generate, *gen_args(studio, session, seed=5))
    run(generate.generate, *gen_args(studio, session, seed=6, cfg=2.5))
    listed = history.refresh(studio)
    seed_col = history.COL["Seed"]
    assert [row[seed_col] for row in listed["table"]] == ["6", "5"]  # newest first; seeds as text, exact in a browser
    newest = listed["song"]
    picked = history.select(studio, newest)
    assert Path(picked["player"]).suffix == ".wav" and picked["details"]["seed"] == 6
    reuse = history.reuse(studio, newest)
    values = gen_values(reuse)
    assert values["seed"] == "6" and values["cfg_scale"] == 2.5 and reuse["lyrics"] == LYRICS
    assert values["max_audio_length_ms"] == pytest.approx(1.6) and values["codec_steps"] == 2
    after = user_errors(history.delete)(studio, newest)
    assert [row[seed_col] for row in after["table"]] == ["5"] and after["player"] is None
    assert History(studio.history.folder).list()[0].seed == 5  # a fresh History agrees
    with pytest.raises(gr.Error, match="pick a song"):
        user_errors(history.delete)(studio, None)


# ----- Transcribe and lyric check ------------------------------------------------------------------
def test_transcribe_spoken_clip(studio, speak, heartmula_cache, tmp_path):
    clip = speak(["the quick brown fox", "jumps over the lazy dog"], tmp_path / "fox.wav")
    outs = run(transcribe.transcribe, studio, Session(), str(clip), 8, 30, "")
    final = outs[-1]
    words = final["text"].lower()
    assert "fox" in words and "lazy" in words and "quick" in words, words
    assert "real-time factor (lower is faster)" in final["speed"]
    assert final["segments"] and all(len(row) == 3 for row in final["segments"])
    files = {Path(p).suffix: Path(p).read_text() for p in final["downloads"]}
    assert set(files) == {".txt", ".lrc", ".srt"} and "-->" in files[".srt"] and "fox" in files[".lrc"].lower()
    with pytest.raises(gr.Error, match="upload or record"):
        run(transcribe.transcribe, studio, Session(), None, 8, 30, "")
    with pytest.raises(gr.Error, match="only transcribes English"):
        run(transcribe.transcribe, studio, Session(), str(clip), 8, 30, "fr")
    with pytest.raises(gr.Error, match="chunk_length_s"):
        run(transcribe.transcribe, studio, Session(), str(clip), 8, 2, "")


def test_a_silent_clip_says_no_words_were_found_and_offers_no_empty_files(studio, heartmula_cache, tmp_path):
    """Reviewer: 10 minutes of silence reported "⏱ 0.0 s for 10:00 min of audio · real-time factor
    … 0.000" and offered 0-byte TXT, LRC and SRT files, never saying no speech was found."""
    import numpy as np
    import soundfile as sf

    clip = tmp_path / "silence.wav"
    sf.write(clip, np.zeros((16_000 * 20, 1), np.float32), 16_000)
    final = run(transcribe.transcribe, studio, Session(), str(clip), 8, 30, "")[-1]
    assert final["text"] == "" and final["segments"] == []
    assert not final["downloads"], final["downloads"]
    assert "No words found" in final["speed"] and "20.0 s" in final["speed"], final["speed"]


def test_check_lyrics_of_a_take(studio, heartmula_cache):
    session = Session()
    with pytest.raises(gr.Error, match="generate a song first"):
        run(generate.check_take, studio, session, "Take 1", LYRICS)
    run(generate.generate, *gen_args(studio, session))
    result = run(generate.check_take, studio, session, "Take 1", LYRICS)[-1]["check_result"]
    assert "Word error rate" in result and "Diff" in result  # noise from tiny weights: the rate is high


# ----- Settings and Compare ------------------------------------------------------------------------
def test_settings_presets_save_validate_delete(studio, home):
    values = settings.preset_values("quality")
    assert values["cfg_scale"] == 2.0 and values["codec_steps"] == 20 and values["batch_size"] == 12
    row = [values[name] for name in settings.PRESET_FIELDS]
    out = user_errors(settings.save)(studio, "my sketch", "mine", *row)
    assert "my sketch" in out["generate_preset"]["choices"] and "my sketch" in out["compare_presets"]["choices"]
    assert (home / "presets" / "my sketch.yaml").is_file()
    assert gen_values(generate.apply_preset("my sketch"))["cfg_scale"] == 2.0
    # saving selects the new preset; the note that selection shows still says where it is
    assert f"saved to `{home / 'presets' / 'my sketch.yaml'}`" in settings.preset_values("my sketch")["preset_note"]
    bad = dict(zip(settings.PRESET_FIELDS, row), cfg_scale=0.5)
    with pytest.raises(gr.Error, match="cfg_scale"):
        user_errors(settings.save)(studio, "bad", "", *[bad[n] for n in settings.PRESET_FIELDS])
    with pytest.raises(gr.Error, match="built-in"):
        user_errors(settings.save)(studio, "quality", "", *row)
    with pytest.raises(gr.Error, match="built-in"):
        user_errors(settings.delete)(studio, "speed")
    out = user_errors(settings.delete)(studio, "my sketch")
    assert "my sketch" not in out["generate_preset"]["choices"]


def test_settings_model_folder_status_and_doctor(studio, tiny_ckpt):
    found = settings.scan_folder(str(tiny_ckpt))
    assert found["version"]["choices"] == ["tiny"] and "HeartCodec-oss: ✓" in found["found"]
    with pytest.raises(gr.Error, match="enter the model folder"):
        user_errors(settings.scan_folder)("")
    assert "version **tiny**" in settings.engine_status(studio)
    with pytest.raises(gr.Error, match="not available"):
        user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cuda", "auto", False)
    assert "Verdict" in settings.doctor(studio)["doctor"]


def test_compare_two_presets(studio):
    outs = run(compare.compare, studio, Session(), ["test-full", "speed"], LYRICS, "pop", 1.6, 42)
    table = [o["table"] for o in outs if "table" in o][-1]
    assert [r[0] for r in table] == ["test-full", "speed"]
    assert all(r[1] > 0 and r[4] > 0 for r in table)  # frames/s, total s
    players = [o["audios"] for o in outs if "audios" in o][-1]  # the last: the finished takes
    assert sum(bool(a.get("visible")) for a in players) == 2
    assert studio.history.list() == []  # compare renders are temporary
    with pytest.raises(gr.Error, match="pick 2 to 4"):
        run(compare.compare, studio, Session(), ["speed"], LYRICS, "pop", 2, 1)


def test_a_page_reloaded_mid_song_does_not_lose_the_song(studio):
    """Reviewer: reloading the page mid-run dropped the job quietly (the song was ended and
    nothing saved), and the new page said "Ready.". A song whose page went away is finished in
    the background and saved to History; a page opened meanwhile says so, and its Generate
    waits for it."""
    import time

    session = Session()
    common.start(session)
    outs = user_errors(generate.generate)(*gen_args(studio, session, duration_s=6))
    for out in outs:
        if "Generating frames" in out.get("status", ""):
            break
    outs.close()  # what gradio does to a job whose page was reloaded or closed
    assert studio.turns.busy  # the song still has the device: a new job waits for it
    shown = generate.page_status(studio)
    assert "being finished" in shown
    # the opened page asks again while its line says so (tester: it said so long after the save)
    assert generate.page_status_again(studio, shown) == {}  # still being finished: no change
    deadline = time.monotonic() + 120
    while (studio.turns.busy or not studio.history.list()) and time.monotonic() < deadline:
        time.sleep(0.05)
    songs = studio.history.list()
    assert len(songs) == 1 and songs[0].duration_s == pytest.approx(6, abs=0.2), songs
    assert not studio.turns.busy and studio.stats.snapshot().job is None
    assert generate.page_status(studio) == "Ready."
    done = generate.page_status_again(studio, shown)
    assert "saved to History" in done["status"] and done["page_timer"]["active"] is False
    # a line the page's own job has written since is never touched, and the asking stops
    assert generate.page_status_again(studio, "⏳ Waiting for the engine…") == {"page_timer": {"active": False, "__type__": "update"}}
    # a job after it runs as usual
    assert run(generate.generate, *gen_args(studio, Session()))[-1]["status"].startswith("✅")


def test_a_stop_that_comes_after_the_song_was_made_is_said_not_swallowed(studio):
    """Reviewer: a Stop that reached the server once the song was saving gave "✅ saved" as if it
    had not been pressed. The song is kept (it was finished), and the line says the Stop came late."""
    session = Session()
    common.start(session)
    seen = []
    for out in user_errors(generate.generate)(*gen_args(studio, session)):
        seen.append(out)
        if "Saving" in out.get("status", "") or "saving" in out.get("status", ""):
            common.stop(session)  # the frames and the decode are done; the take is being saved
    status = seen[-1]["status"]
    assert status.startswith("✅") and "Stop came after the song was made" in status, status
    assert len(studio.history.list()) == 1


def test_a_compare_stopped_midway_says_what_finished_and_keeps_its_players(studio):
    """Reviewer: Compare stopped after its first preset said "⏹ Stopped. Nothing was saved." while
    that preset's player and table row stayed on the page: the line must say what finished."""
    session = Session()
    common.start(session)
    seen = []
    for out in user_errors(compare.compare)(studio, session, ["test-full", "speed"], LYRICS, "pop", 6, 42):
        seen.append(out)
        if "**speed** (2/2)" in out.get("status", "") and not session.cancel.is_set():
            common.stop(session)  # the second preset has begun: the first is done
    status = seen[-1]["status"]
    assert status.startswith("⏹") and "Nothing was saved" not in status, status
    assert "1 of 2 presets" in status and "test-full" in status and "not kept in History" in status, status
    players = [o["audios"] for o in seen if "audios" in o][-1]
    assert [bool(a.get("visible")) for a in players][:2] == [True, False]
    assert [r[0] for r in [o["table"] for o in seen if "table" in o][-1]] == ["test-full"]


def test_header_says_demo_weights_make_noise(engine, tmp_path):
    from ui.blocks import DOWNLOAD_COMMAND, build_ui, header

    assert DOWNLOAD_COMMAND == "python -m heartmula download --model-path ./ckpt"
    real = header(Studio(engine=engine, history=History(tmp_path)))
    demo = header(Studio(engine=engine, history=History(tmp_path), demo=True))
    assert "noise" not in real and "make noise" in demo and DOWNLOAD_COMMAND in demo
    blocks = build_ui(engine, output_dir=tmp_path / "out", demo=True)
    assert blocks.studio.demo and blocks.studio.history.folder == tmp_path / "out"
    api = {fn.api_name for fn in blocks.fns.values() if fn.api_visibility == "public"}
    assert {"generate", "transcribe", "compare"} <= api


def test_settings_load_replaces_engine_and_unload(studio, tiny_ckpt):
    old = studio.engine
    out = user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", True)
    assert studio.engine is not old and old.mula is None  # the old engine's memory is given back
    assert "lazy load on" in out["engine_status"]
    run(generate.generate, *gen_args(studio, Session()))  # the new engine generates (and frees after)
    assert studio.engine.mula is None and len(studio.history.list()) == 1
    assert "nothing" in user_errors(settings.unload)(studio)["engine_status"]


def test_settings_loads_int8_weights_and_each_song_says_so(studio, tiny_ckpt):
    """The Settings choice reaches the engine; the status, the song's result line and its
    sidecar name the mode, and the result line keeps the song's peak memory."""
    assert [value for _, value in settings.QUANT_CHOICES] == ["none", "int8"]
    out = user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", False, settings.SAME, "int8")
    assert studio.engine.config.quant == "int8" and studio.engine.mula.quant == "int8"
    assert "weights **int8 (experimental)**" in out["engine_status"]
    outs = run(generate.generate, *gen_args(studio, Session()))
    text = [o["status"] for o in outs if "status" in o][-1]
    assert "weights int8 (experimental)" in text and "peak memory not reported on CPU" in text  # the CPU says none
    song = studio.history.list()[0]
    sidecar = json.loads(song.sidecar_path.read_text())
    assert sidecar["model"]["quant"] == "int8"
    picked = history.select(studio, song.id)  # History's details: the summary line and the sidecar's fields
    assert "weights int8 (experimental) · peak memory not reported on CPU" in picked["now"], picked["now"]
    assert picked["details"]["model"]["quant"] == "int8" and "peak_memory_bytes" in picked["details"]
    with pytest.raises(gr.Error, match="weights must be one of none, int8, got 'int4'"):
        user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", False, settings.SAME, "int4")
    back = user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", False, settings.SAME, "none")
    assert studio.engine.config.quant == "none" and "weights **not quantized**" in back["engine_status"]
    outs = run(generate.generate, *gen_args(studio, Session(), seed=12))
    text = [o["status"] for o in outs if "status" in o][-1]
    assert "weights not quantized" in text  # every song names its mode, not only int8 ones


def test_each_song_in_history_names_its_weights_and_peak_memory(studio):
    """A song's line in History reads the sidecar: a GPU song's peak in bytes as the page writes
    sizes; a song from before the weights were recorded says so rather than guessing."""
    run(generate.generate, *gen_args(studio, Session()))
    song = studio.history.list()[0]
    meta = json.loads(song.sidecar_path.read_text())
    meta.update(peak_memory_bytes=6_442_450_944, device="cuda:0")
    meta["model"]["quant"] = "int8"
    song.sidecar_path.write_text(json.dumps(meta))
    now = history.select(studio, song.id)["now"]
    assert f"weights int8 (experimental) · peak memory {common.fmt_bytes(6_442_450_944)} on cuda:0" in now, now
    del meta["model"]["quant"], meta["peak_memory_bytes"]
    song.sidecar_path.write_text(json.dumps(meta))
    now = history.select(studio, song.id)["now"]
    assert "weights not recorded · peak memory not reported" in now, now


def _int8_preset(name: str = "small-card") -> None:
    from heartmula.library.presets import preset_from_dict

    save_preset(preset_from_dict(name, {"quant": "int8", "topk": 20, "description": "fits small cards"}, "test"))


def test_a_preset_asking_for_other_weights_sets_the_choice_and_waits_for_load(studio, tiny_ckpt):
    """Picking a preset that names `quant` (Settings or Generate): the Settings weights choice
    follows it and the page says a Load applies it; nothing reloads by itself (a multi-GB load).
    A preset without `quant` leaves the choice alone; after Load the note goes."""
    _int8_preset()
    engine = studio.engine
    assert engine.config.quant == "none"
    out = user_errors(common.preset_weights)(studio, "small-card")
    assert out["quant"] == "int8"
    assert "Preset **small-card** asks for **int8 (experimental)** weights" in out["quant_note"]
    assert "press **Load**" in out["quant_note"] and "not quantized" in out["quant_note"]
    assert studio.engine is engine and engine.config.quant == "none"  # not reloaded
    assert common.preset_weights(studio, "balanced") == {}  # no quant in it: the choice stays as it is
    picked = user_errors(generate.pick_preset)(studio, "small-card")  # the Generate tab's picker
    assert gen_values(picked)["topk"] == 20 and picked["quant"] == "int8"
    assert "fits small cards" in picked["preset_info"] and "Load** on the Settings tab" in picked["preset_info"]
    assert picked["quant_note"] == out["quant_note"] and studio.engine is engine
    plain = generate.pick_preset(studio, "balanced")
    assert "quant" not in plain and "Load" not in plain["preset_info"]
    # the choice changed by hand says the same; back to the loaded mode, nothing to do
    assert "press **Load**" in settings.weights_changed(studio, "int8")["quant_note"]
    assert settings.weights_changed(studio, "none") == {"quant_note": ""}
    loaded = user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", False, settings.SAME,
                                        out["quant"])
    assert studio.engine.config.quant == "int8" and loaded["quant_note"] == ""
    assert common.preset_weights(studio, "small-card") == {"quant": "int8", "quant_note": ""}
    with pytest.raises(gr.Error, match="no preset named 'gone'"):
        user_errors(common.preset_weights)(studio, "gone")


def test_the_studio_wires_preset_weights_to_the_settings_choice(engine, tmp_path):
    """Both preset pickers reach the Settings weights choice and its note; the choice moved by
    hand updates the note; Load clears it."""
    from ui.blocks import build_ui

    blocks = build_ui(engine, output_dir=tmp_path / "out")
    by_id = {getattr(b, "elem_id", None): b for b in blocks.blocks.values()}
    quant, note = by_id["set-quant"], by_id["set-quant-note"]
    wired = {}
    for fn in blocks.fns.values():
        for block_id, event in fn.targets:
            wired.setdefault((getattr(blocks.blocks.get(block_id), "elem_id", None), event), []).append(fn)

    def reaches(elem_id: str, event: str, *components) -> bool:
        return any(all(c in fn.outputs for c in components) for fn in wired.get((elem_id, event), []))

    assert reaches("set-preset", "select", quant, note) and reaches("gen-preset", "select", quant, note)
    assert reaches("set-quant", "input", note) and reaches("set-load", "click", note)
    assert not reaches("set-preset", "change", quant)  # presets the page sets itself leave the choice alone


def test_settings_places_the_codec_on_its_own_device(studio, tiny_ckpt, monkeypatch):
    # This machine has one device kind; a second "card" is the CPU by name, which is what
    # a two-GPU user does with cuda:0 and cuda:1 (the choices list them by index).
    monkeypatch.setattr(settings, "device_choices", lambda: ["auto", "cpu", "cpu:0"])
    out = user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", False, "cpu:0")
    assert str(studio.engine.codec_device) == "cpu:0" and studio.engine.config.codec_device == "cpu:0"
    assert "codec on **cpu:0**" in out["engine_status"]
    with pytest.raises(gr.Error, match="codec device 'cuda:7' is not available here; available: auto, cpu"):
        user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", False, "cuda:7")
    same = user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", False, settings.SAME)
    assert studio.engine.config.codec_device is None and "codec on" not in same["engine_status"]


def test_huge_seeds_stay_exact_on_the_page(studio):
    """Seeds go up to 2**63 - 1; a browser reads JSON numbers as float64, so the page gets them as text."""
    session = Session()
    big = 123456789012345678
    final = run(generate.generate, *gen_args(studio, session, seed=big, takes=2))[-1]
    assert [m["seed"] for m in final["metadata"]] == [str(big), str(big + 1)]
    assert [m["options"]["seed"] for m in final["metadata"]] == [str(big), str(big + 1)]
    rows = history.refresh(studio)["table"]
    seed, song_id = history.COL["Seed"], history.COL["ID"]
    assert sorted(r[seed] for r in rows) == [str(big), str(big + 1)]
    details = history.select(studio, rows[0][song_id])["details"]
    assert details["seed"] in (str(big), str(big + 1)) and details["take"] in (0, 1)
    assert json.loads(studio.history.get(rows[0][song_id]).sidecar_path.read_text())["seed"] in (big, big + 1)


def test_bad_preset_files_are_named_on_the_settings_tab(home):
    (home / "presets" / "typo.yaml").write_text("cfg_scael: 2.0\n")
    (home / "presets" / "range.yaml").write_text("topk: 0\n")
    (home / "presets" / "broken.yaml").write_text("cfg_scale: [1, 2\ntopk: `x`\n")  # a multi-line YAML error
    text = settings.dropdowns(None)["preset_problems"]
    lines = text.splitlines()
    assert lines[0] == "**3 preset file(s) skipped** (fix or delete them):" and len(lines) == 4  # one line a file
    shown = text.replace("\\", "")  # as Markdown renders the escapes
    assert "typo.yaml: unknown key(s) cfg_scael" in shown and "range.yaml: topk=0 is out of range" in shown
    assert "broken.yaml: not valid YAML" in shown and "`" not in text.replace("\\`", "")
    for name in ("typo", "range", "broken"):
        (home / "presets" / f"{name}.yaml").unlink()
    assert settings.dropdowns(None)["preset_problems"] == ""


def test_extend_and_regenerate_from_history(studio):
    session = Session()
    run(generate.generate, *gen_args(studio, session, seed=31))  # 1.6 s = 20 frames, ignore_eos on
    parent = studio.history.list()[0]
    out = user_errors(history.extend)(studio, parent.id, 0.96, "")
    longer = studio.history.get(out["song"])
    assert longer.meta["parent"] == {"sidecar": f"{parent.id}.json", "id": parent.id, "mode": "extend",
                                     "from_frame": 20, "at_s": 1.6}
    assert longer.frames().shape == (32, 8) and longer.seed == 31
    np.testing.assert_array_equal(longer.frames()[:20], parent.frames())
    assert "” extended:" in out["continue_status"]
    out = user_errors(history.regenerate)(studio, longer.id, "0:01", 2, "")
    redo = [s for s in studio.history.list() if s.meta.get("parent", {}).get("mode") == "regenerate"]
    assert len(redo) == 2 and all(s.meta["parent"]["id"] == longer.id and s.meta["parent"]["from_frame"] == 12
                                  for s in redo)
    for s in redo:
        np.testing.assert_array_equal(s.frames()[:12], longer.frames()[:12])
    rows = {r[history.COL["ID"]]: r[history.COL["Made from"]] for r in history.refresh(studio)["table"]}
    assert rows[longer.id] == f"extend of {parent.id} at 0:01.60" and rows[parent.id] == ""
    for bad, message in ((lambda: history.regenerate(studio, parent.id, "0:09", 1, ""), "give a time from 0:00.08"),
                         (lambda: history.regenerate(studio, parent.id, "1:75", 1, ""), "write it as m:ss"),
                         (lambda: history.extend(studio, parent.id, "abc", ""), "seconds to add must be a number"),
                         (lambda: history.extend(studio, None, 1, ""), "pick a song"),
                         (lambda: history.extend(studio, parent.id, 60, ""), "plus at most"),
                         (lambda: history.extend(studio, parent.id, 99999, ""), "add at most 598.40 s, got 99999"),
                         (lambda: history.extend(studio, parent.id, "1e21", ""), "add at most 598.40 s"),
                         (lambda: history.extend(studio, parent.id, 0.01, ""), "give at least 0.08 \\(one frame\\)"),
                         (lambda: history.extend(studio, parent.id, None, ""), "enter the seconds to add"),
                         (lambda: history.extend(studio, parent.id, "", ""), "enter the seconds to add"),
                         (lambda: history.extend(studio, parent.id, "nan", ""), "must be a number of seconds"),
                         (lambda: history.extend(studio, parent.id, -5, ""), "must be more than 0"),
                         (lambda: history.regenerate(studio, parent.id, "0:01", "99", ""), "Takes: takes=99 is out"),
                         (lambda: history.regenerate(studio, parent.id, "0:01", "x", ""), "Takes: takes must be")):
        with pytest.raises(gr.Error, match=message):
            user_errors(bad)()
    parent.codes_path.write_bytes(b"not numpy at all")
    with pytest.raises(gr.Error, match=r"^[^/]*codes cannot be read \(the file is damaged\)") as caught:
        user_errors(history.extend)(studio, parent.id, 1, "")
    assert str(studio.history.folder) not in str(caught.value) and "pickle" not in str(caught.value)
    parent.codes_path.unlink()  # removed by hand
    with pytest.raises(gr.Error, match="codes file .* is missing"):
        user_errors(history.extend)(studio, parent.id, 1, "")
    with pytest.raises(ValueError, match="tags hold no words"):
        studio.engine.check_request(LYRICS, " ,,, ", GenerateOptions())


def test_a_refused_extend_says_why_on_its_status_line(studio):
    """Tester: Extend refused (-5 seconds, then 0) said why only in pop-ups, which the page stacked
    into one ("Error (2) × … got -5 … got 0"), the stale one first; the line said "❌ Not done (see
    the message)". The line under the buttons says why, as Generate's does."""
    from functools import partial

    run(generate.generate, *gen_args(studio, Session(), seed=31))
    song = studio.history.list()[0]
    handler = user_errors(common.line_says_why(partial(history.extend, studio), "continue_status"))
    for seconds, why in ((-5, "must be more than 0, got -5"), (0, "must be more than 0, got 0")):
        seen = []
        with pytest.raises(gr.Error, match=why):
            for out in handler(song.id, seconds, ""):
                seen.append(out)
        assert seen == [{"continue_status": f"❌ Not done: seconds to add {why}"}], seen
    done = list(handler(song.id, 0.48, ""))  # and one that runs gives the handler's own answer
    assert len(done) == 1 and "” extended:" in done[0]["continue_status"]


def test_a_non_audio_upload_is_named_by_its_file_name_only(studio, tmp_path):
    upload = tmp_path / "gradio-cache-abc123" / "notes.mp3"  # as an upload lands on the server
    upload.parent.mkdir()
    upload.write_text("these are words, not sound\n")
    with pytest.raises(gr.Error) as e:
        run(transcribe.transcribe, studio, Session(), str(upload), 8, 30, "")
    text = str(e.value)
    assert "notes.mp3: not a readable audio file (its contents are not audio" in text, text
    assert str(upload.parent) not in text and "does not exist" not in text


def test_deleting_a_song_removes_the_copies_gradio_serves(studio, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))
    run(generate.generate, *gen_args(studio, Session(), seed=41))
    song = studio.history.list()[0]
    copy = tmp_path / "gradio-cache" / "3f2a" / song.audio_path.name  # as gradio caches a file it served
    copy.parent.mkdir(parents=True)
    copy.write_bytes(song.audio_path.read_bytes())
    other = copy.parent / "someone-else.wav"
    other.write_bytes(b"x")
    user_errors(history.delete)(studio, song.id)
    assert not copy.exists() and other.exists()


def test_a_preset_gone_from_the_list_leaves_the_transcribe_controls_as_they_are():
    from ui.handlers import transcribe as transcribe_h

    out = transcribe_h.preset_settings("no-such-preset")
    assert len(out["options"]) == len(generate.TR_NAMES)  # one update per control: no 'not enough outputs'


# ----- the History library (issue 16) and a song's variants (issue 20) --------------------------------
def test_library_titles_favourites_search_and_clicks(studio):
    session = Session()
    run(generate.generate, *gen_args(studio, session, seed=41))
    first = history.refresh(studio)["song"]
    run(generate.generate, *gen_args(studio, session, seed=42))
    listed = history.refresh(studio)
    second = listed["song"]
    assert second != first and [r[history.COL["Title"]] for r in listed["table"]] [:2] == ["hello world, this is a test"] * 2
    row = next(r for r in listed["table"] if r[history.COL["ID"]] == first)
    assert history.clicked(row, [0, 1]) == {"song": first, "continue_status": ""}  # a click anywhere on a row picks its song
    assert history.clicked(None, None) == {} and history.clicked(["x"], [0, 0]) == {}
    picked = history.select(studio, first)
    assert picked["title"] == "hello world, this is a test" and "hello world" in picked["now"]
    assert picked["favourite"]["value"] == history.NOT_FAVOURITE and picked["favourite"]["interactive"]
    out = run(history.save_title, studio, first, "Night *drive* [demo](http://x)", "", False)[0]
    assert out["title"] == "Night *drive* [demo](http://x)" and "\\*drive\\*" in out["now"]  # shown as written
    out = run(history.toggle_favourite, studio, first, "", False)[0]
    assert out["favourite"]["value"] == history.FAVOURITE
    assert [r[history.COL["ID"]] for r in history.refresh(studio, None, "", True)["table"]] == [first]
    found = history.refresh(studio, None, "night dri", False)
    assert [r[history.COL["ID"]] for r in found["table"]] == [first] and "1 song(s) match" in found["status"]
    assert history.refresh(studio, None, "nothing-like-this", False)["table"] == []
    assert history.refresh(studio, second, "night", False)["song"] == second  # the pick stays while searching
    out = run(history.toggle_favourite, studio, first, "", True)[0]  # off again, in the favourites view
    assert out["table"] == [] and out["favourite"]["value"] == history.NOT_FAVOURITE
    for bad in (history.save_title, history.toggle_favourite):
        with pytest.raises(gr.Error, match="pick a song"):
            run(bad, studio, None, "x") if bad is history.save_title else run(bad, studio, None)


def test_generate_result_opens_a_take_in_history_and_variants_compare(studio):
    session = Session()
    run(generate.generate, *gen_args(studio, session, seed=51, takes=2))
    out = generate.open_in_history(studio, session, "Take 2")
    assert out["song"] == session.last_song_ids[1]
    with pytest.raises(gr.Error, match="pick a take"):
        user_errors(generate.open_in_history)(studio, session, "Take 9")
    with pytest.raises(gr.Error, match="generate a song first"):
        user_errors(generate.open_in_history)(studio, Session(), "Take 1")
    studio.history.delete(session.last_song_ids[0])
    with pytest.raises(gr.Error, match="take 1 of the last run is no longer in History"):
        user_errors(generate.open_in_history)(studio, session, "Take 1")
    picked = history.select(studio, out["song"])
    assert picked["regen_at"] == "0:00.80"  # a time inside the 1.6 s take
    lonely = history.variants(studio, out["song"])
    assert "no variants yet" in lonely["family_note"] and len(lonely["family_table"]) == 1
    longer = studio.history.get(user_errors(history.extend)(studio, out["song"], 0.48, "")["song"])
    family = history.variants(studio, out["song"])
    assert [r[-1] for r in family["family_table"]] == [out["song"], longer.id]
    assert family["family_table"][1][1].startswith("extend of ")
    shown = [a for a in family["family_audios"] if a.get("visible")]
    assert [Path(a["value"]).name for a in shown] == [f"{out['song']}.wav", f"{longer.id}.wav"]
    assert history.variants(studio, longer.id)["family_table"][0][-1] == longer.id  # the picked one first


# ----- hearing a song while it is made (issue 19, part 2) ------------------------------------------
def test_playback_waits_only_as_long_as_the_rest_needs_to_play_through():
    """`start_delay_s`: seconds until playback from the start can run to the end without a stall,
    from the live frames/s and the codec's chunk schedule (chunks end at frames 320, 640, 960 and
    the end; each is decodable 53 frames later, the last once the song has ended)."""
    from ui.handlers.live import REAL_TIME_FPS, start_delay_s

    assert REAL_TIME_FPS == 12.5
    song = 1125  # 90 s
    # no rate yet while frames are still to come: nobody can tell
    assert start_delay_s(373, song, 0.0, 320) is None
    # faster than real time: at once
    assert start_delay_s(373, song, 50.0, 320) == 0.0
    # exactly real time plays through, but only with a codec that takes no time
    assert start_delay_s(373, song, 12.5, 320) == 0.0
    assert start_delay_s(373, song, 12.5, 320, chunk_latency_s=1.0) == pytest.approx(1.0)
    # half real time: the chunk ending at frame 960 is decodable at frame 1013, (1013 - 373) / 6.25 =
    # 102.4 s from now, and playback reaches its start (640 frames) 51.2 s after it starts
    assert start_delay_s(373, song, 6.25, 320) == pytest.approx(51.2)
    # the later it gets, the less is left to wait for (the same song, 320 frames on)
    assert start_delay_s(693, song, 6.25, 640) == pytest.approx(51.2 - 320 / 6.25)
    # the last chunk: every frame is made, only the codec is left; it cannot run out any more
    assert start_delay_s(song, song, 6.25, 960, chunk_latency_s=3.0) == 0.0
    assert start_delay_s(song, song, 0.0, 960, chunk_latency_s=3.0) == 0.0  # and needs no rate
    # a short song is one chunk, there at the end: nothing to wait for then
    assert start_delay_s(100, 100, 3.0, 100) == 0.0
    # nothing playable yet: at least until the first chunk exists
    assert start_delay_s(0, song, 50.0, 0) == pytest.approx(373 / 50)


def test_on_a_slow_device_take_one_waits_until_it_can_play_through_or_until_asked():
    """The handler's bookkeeping with the engine's own progress and chunk types: at half real time
    the first chunk waits; "Play what is ready" starts it; without ffmpeg nothing streams."""
    from heartmula import AudioChunk, Progress
    from ui.handlers.live import LivePlayback

    def chunk(take, seconds):
        return AudioChunk(take=take, audio=np.full((2, int(seconds * 48_000)), 0.5, np.float32), start_sample=0,
                          sample_rate=48_000)

    live = LivePlayback(1, 1125)
    live.progress(Progress("frames", 373, 1125, 60.0, 6.25, 120.0))
    live.add(chunk(0, 25.6))  # (its codec time, as measured here, is next to nothing)
    assert not live.start_if_ready(play_now=False) and live.pieces() == []
    assert live.delay_s() == pytest.approx(51.2, abs=0.5)  # as start_delay_s works it out above
    assert "Take 1 starts in about 5" in live.note() and "6.2 frames/s" in live.note()
    assert "Play what is ready" in live.note()
    assert live.start_if_ready(play_now=True)
    pieces = live.pieces()
    assert len(pieces) == 13 and live.pieces() == []  # 25.6 s in 2 s pieces, each sent once
    assert sum(len(p) - 44 for p in pieces) == 25.6 * 48_000 * 2 * 2  # 16-bit stereo WAV, 44-byte headers
    assert "Playing take 1" in live.note()
    # faster than real time: the first chunk plays as it comes
    fast = LivePlayback(2, 1125)
    fast.progress(Progress("frames", 376, 1125, 6.0, 60.0, 12.5))
    fast.add(chunk(1, 25.6))  # take 2 first: nothing of take 1 to play yet
    assert not fast.start_if_ready(play_now=False)
    fast.add(chunk(0, 25.6))
    assert fast.start_if_ready(play_now=False)
    # the loud parts are limited one sample at a time: the saved file will hold the same
    loud = LivePlayback(1, 100)
    loud.add(AudioChunk(take=0, audio=np.array([[2.0, -0.5], [0.95, -3.0]], np.float32), start_sample=0,
                        sample_rate=48_000))
    assert float(np.abs(loud.audio[0][0]).max()) < 0.98 and loud.audio[0][0][0, 1] == -0.5
    # no ffmpeg: gradio could not encode the stream; the takes still play once made
    mute = LivePlayback(1, 1125, streaming=False)
    mute.progress(Progress("frames", 376, 1125, 6.0, 60.0, 12.5))
    mute.add(chunk(0, 25.6))
    assert not mute.start_if_ready(play_now=True) and mute.pieces() == [] and "FFmpeg" in mute.note()


def test_without_ffmpeg_generate_still_makes_and_saves_the_takes(demo_studio, monkeypatch):
    import shutil

    from ui.handlers.live import can_stream

    monkeypatch.setenv("PATH", "/nonexistent")
    assert shutil.which("ffmpeg") is None and not can_stream()
    session = Session()
    outs = run(generate.generate, *gen_args(demo_studio, session, duration_s=32))
    assert not any(isinstance(o.get("live"), bytes) for o in outs)
    assert "✅" in outs[-1]["status"] and len(demo_studio.history.list()) == 1


@pytest.fixture(scope="module")
def demo_engine(heartmula_cache):
    from heartmula.demo import DEMO_VERSION, ensure_demo_bundle

    return load_engine(str(ensure_demo_bundle()), version=DEMO_VERSION, device="cpu")


@pytest.fixture()
def demo_studio(demo_engine, tmp_path, home):
    return Studio(engine=demo_engine, history=History(tmp_path / "outputs"), temp_dir=tmp_path / "tmp")


def _pcm(wav_bytes_or_path) -> np.ndarray:
    """Samples as the 16-bit integers a WAV holds: [samples, channels]."""
    import io

    src = io.BytesIO(wav_bytes_or_path) if isinstance(wav_bytes_or_path, bytes) else wav_bytes_or_path
    audio, rate = sf.read(src, dtype="int16", always_2d=True)
    assert rate == 48_000
    return audio


def test_take_one_plays_while_it_is_made_and_the_file_is_what_was_heard(demo_studio):
    """88 s (1100 frames, four codec windows), two takes: take 1 reaches the live player chunk by
    chunk while frames are still being made (the codec decodes a window of both takes in less
    time than the frame loop needs for the 727 frames after it); the saved take 1 is the streamed audio sample for
    sample; take 2 can be heard from its chunks so far; the end is as before (files, History)."""
    session = Session()
    common.start(session)
    outs, heard_take2 = [], None
    frames_when_first_live = None
    for out in user_errors(generate.generate)(*gen_args(demo_studio, session, duration_s=88, takes=2)):
        outs.append(out)
        if isinstance(out.get("live"), bytes) and frames_when_first_live is None:
            snap = demo_studio.stats.snapshot()
            frames_when_first_live = snap.done if snap.phase == "frames" else 1100
            assert not any(a.get("visible") for o in outs for a in o.get("audios", []))  # before the finished takes
        if heard_take2 is None and 1 in session.live_files:
            heard_take2 = generate.hear_take(session, "Take 2")
    live = [o["live"] for o in outs if isinstance(o.get("live"), bytes)]
    final = outs[-1]
    assert frames_when_first_live is not None and frames_when_first_live < 1100, frames_when_first_live
    assert any("playable" in o.get("live_note", "") for o in outs)
    streamed = np.concatenate([_pcm(b) for b in live])
    take1, take2 = [a["value"] for a in final["audios"] if a.get("visible")]
    np.testing.assert_array_equal(streamed, _pcm(take1))  # the file is what was heard
    assert streamed.shape[0] == 1100 * 3840
    # take 2 from its chunks so far: the start of its finished file
    picked = heard_take2["audios"][1]
    assert picked["visible"] and "(so far)" in picked["label"]
    so_far = _pcm(picked["value"])
    assert 0 < so_far.shape[0] < 1100 * 3840
    np.testing.assert_array_equal(so_far, _pcm(take2)[: so_far.shape[0]])
    assert len(demo_studio.history.list()) == 2 and "✅" in final["status"]
    # after the end a pick serves the finished file
    assert generate.hear_take(session, "Take 2")["audios"][1]["value"] == take2


def test_a_stop_while_playing_ends_within_a_second_and_keeps_what_was_heard(demo_studio):
    session = Session()
    common.start(session)
    outs = []
    for out in user_errors(generate.generate)(*gen_args(demo_studio, session, duration_s=120)):
        outs.append(out)
        if isinstance(out.get("live"), bytes) and not session.cancel.is_set():
            common.stop(session)  # Stop as the first chunk starts playing
    live = [o["live"] for o in outs if isinstance(o.get("live"), bytes)]
    heard = np.concatenate([_pcm(b) for b in live])
    note = [o["live_note"] for o in outs if "live_note" in o][-1]
    seconds = float(note.split("stopped ")[1].split(" s after")[0])
    assert seconds < 1.0, note
    kept = [a for a in outs[-2]["audios"] if a.get("visible")]  # the step before reports_end's "Stopped"
    assert len(kept) == 1 and "not saved" in kept[0]["label"]
    assert outs[-1]["status"] == "⏹ Stopped: not saved to History."  # as the note says, not "nothing"
    np.testing.assert_array_equal(_pcm(kept[0]["value"])[: heard.shape[0]], heard)  # what was heard stays
    # Tester: what was made could be heard but not downloaded (the Downloads list stayed empty)
    # named by the time of the stop (tester: every stopped song downloaded as take1-stopped.wav)
    import re

    assert outs[-2]["downloads"] == [kept[0]["value"]]
    assert re.fullmatch(r"stopped-\d{8}-\d{6}-take1\.wav", Path(kept[0]["value"]).name), kept[0]["value"]
    assert demo_studio.history.list() == [] and "Stopped" in outs[-1]["status"]
    common.start(session)  # the engine takes the next job
    assert "audios" in run(generate.generate, *gen_args(demo_studio, session, duration_s=2))[-1]


def test_a_bad_request_is_refused_at_once_not_after_waiting_for_another_job(studio):
    """Tester: with another tab's song running, Temperature 700 was refused only once that song had
    ended (minutes of "⏳ Waiting…" to learn a value was wrong). A request is checked first."""
    import time

    def first_answer(fn, *args):
        # on a thread: a handler that waits for the turn held below would otherwise wait forever
        seen, box = [], {}

        def consume():
            try:
                for out in user_errors(fn)(*args):
                    seen.append(out)
            except gr.Error as e:
                box["error"] = e

        started = time.monotonic()
        worker = threading.Thread(target=consume, daemon=True)
        worker.start()
        worker.join(timeout=20)
        assert not worker.is_alive(), f"still waiting for the device: {seen[-1:]}"
        assert "error" in box, seen
        return box["error"], seen, time.monotonic() - started

    with studio.turns.take("another page's song"):  # the device is in use for as long as this lasts
        args = list(gen_args(studio, Session()))
        args[4 + generate.GEN_NAMES.index("temperature")] = 700
        error, seen, took = first_answer(generate.generate, *args)
        assert "Temperature: temperature=700" in str(error) and took < 5
        assert not any("Waiting for" in o.get("status", "") for o in seen), seen
        error, seen, _ = first_answer(generate.generate, *gen_args(studio, Session(), lyrics="   "))
        assert "lyrics" in str(error).lower() and not any("Waiting for" in o.get("status", "") for o in seen)
        error, seen, _ = first_answer(compare.compare, studio, Session(), ["speed"], LYRICS, "pop", 2, 1)
        assert "pick 2 to 4" in str(error) and not any("Waiting for" in o.get("status", "") for o in seen)
        error, seen, _ = first_answer(transcribe.transcribe, studio, Session(), None, 8, 30, "")
        assert not any("Waiting for" in o.get("speed", "") for o in seen), seen


def test_a_stopped_take_with_no_audio_yet_is_named_in_the_note(demo_studio):
    """Tester: stopped with three takes, takes 1 and 2 came back playable and take 3 had nothing,
    with no word of why (a take's audio comes a codec window at a time)."""
    session = Session()
    common.start(session)
    outs = []
    for out in user_errors(generate.generate)(*gen_args(demo_studio, session, duration_s=120, takes=3)):
        outs.append(out)
        if isinstance(out.get("live"), bytes) and not session.cancel.is_set():
            common.stop(session)
    note = [o["live_note"] for o in outs if "live_note" in o][-1]
    playing = [i for i, a in enumerate(outs[-2]["audios"]) if a.get("visible")]
    missing = [i for i in range(3) if i not in playing]
    assert playing and all(f"Take {i + 1}" in note for i in missing), (note, playing)
    if missing:
        assert "codec window" in note, note


def test_a_new_run_clears_the_last_ones_results(studio):
    """A run that is then stopped never shows the previous run's takes as its own, and the result
    buttons (Extend…, Check lyrics) no longer act on them (reviewer: they stayed, unlabelled)."""
    session = Session()
    run(generate.generate, *gen_args(studio, session, seed=61))
    assert session.last_song_ids
    first = next(user_errors(generate.generate)(*gen_args(studio, session, seed=62)))
    assert [a["visible"] for a in first["audios"]] == [False] * generate.MAX_TAKES
    assert first["downloads"] is None and first["check_take"]["choices"] == [] and session.last_song_ids == []
    with pytest.raises(gr.Error, match="generate a song first"):
        user_errors(generate.open_in_history)(studio, session, "Take 1")


def test_after_the_run_a_take_picked_to_hear_keeps_its_seed_and_the_picker_goes(studio):
    """Reviewer 2: picking Take 2 after the end relabelled its player "Take 2", dropping the seed,
    and the "audio so far" picker stayed beside players that already hold every take's file."""
    session = Session()
    outs = run(generate.generate, *gen_args(studio, session, seed=71, takes=2))
    assert outs[-1]["hear"]["visible"] is False
    heard = generate.hear_take(session, "Take 2")["audios"][1]
    final = outs[-1]["audios"][1]
    assert heard["value"] == final["value"] and heard.get("label", final["label"]) == final["label"] == "Take 2 · seed 72"


def test_a_refused_run_leaves_no_live_note_promising_audio(studio):
    """Reviewer 2: a run the engine refuses (here the prompt fills the tiny model's 256 positions)
    left the live note saying take 1 would start soon beside the error."""
    session = Session()
    outs = []
    with pytest.raises(gr.Error, match="shorten the lyrics"):
        for out in user_errors(generate.generate)(*gen_args(studio, session, lyrics="hello world " * 40, duration_s=15)):
            outs.append(out)
    # (refused before it starts since the checks come first: it then writes no note at all)
    assert all(o["live_note"] == "Nothing was made." for o in outs if "live_note" in o)
    assert all(o["hear"].get("visible") is False for o in outs if "hear" in o)


def test_picking_a_take_with_no_audio_yet_says_so_and_clears_the_pick():
    """Reviewer: the picker kept showing "Take 3" beside the error while take 1 played."""
    session = Session()
    session.live_files = {0: "take1-so-far.wav"}
    out = generate.hear_take(session, "Take 3")
    assert out["hear"]["value"] is None and "audios" not in out


def test_a_run_waiting_for_the_last_jobs_window_says_so(studio):
    """Reviewer 2: after a Stop the next run showed "Starting… elapsed 12.4 s" while the stopped
    job's last codec window finished in the background. It says what it waits for."""
    session = Session()
    with studio.engine._request():  # a job still holds the engine (as a stopped one finishing its window)
        steps = user_errors(generate.generate)(*gen_args(studio, session))
        outs = [next(steps), next(steps)]
        steps.close()
    assert "waiting for the last job" in outs[1]["status"].lower()
    assert not studio.engine.busy


def test_a_preset_saved_on_settings_keeps_the_weights_chosen_there(studio, home):
    """Helper-10: saving a preset from Settings dropped its `quant`; a preset loaded from the file
    must ask for the weights the musician had chosen (int8), and "none" leaves it to the loader."""
    from heartmula import load_presets

    values = settings.preset_values("balanced")
    row = [values[name] for name in settings.PRESET_FIELDS]
    user_errors(settings.save)(studio, "small card", "", *row, "int8")
    user_errors(settings.save)(studio, "plain", "", *row, "none")
    presets, _ = load_presets()
    assert presets["small card"].quant == "int8" and presets["plain"].quant is None


def test_compare_says_when_a_preset_asks_for_weights_it_did_not_run_with(studio, home):
    """Helper-10: Compare ran a preset asking for int8 with the loaded (unquantized) model, silently."""
    (home / "presets").mkdir(parents=True, exist_ok=True)
    (home / "presets" / "small card.yaml").write_text("quant: int8\nmax_audio_length_ms: 1600\n")
    outs = run(compare.compare, studio, Session(), ["small card", "speed"], LYRICS, "pop", 1.6, 42)
    assert "small card asks for int8 weights" in outs[-1]["status"] and "Load" in outs[-1]["status"]
    outs = run(compare.compare, studio, Session(), ["test-full", "speed"], LYRICS, "pop", 1.6, 42)
    assert "weights" not in outs[-1]["status"]


def test_a_song_being_extended_cannot_be_deleted_until_the_job_ends(studio):
    """Reviewer 2: a song deleted during its extend left the new song naming a deleted parent."""
    session = Session()
    run(generate.generate, *gen_args(studio, session, seed=81))
    song_id = session.last_song_ids[0]
    started, release = threading.Event(), threading.Event()

    def slow_progress(p):  # the extend's own progress reports: hold it mid-job until the delete was tried
        started.set()
        release.wait(timeout=60)

    studio.stats.progress, original = slow_progress, studio.stats.progress
    worker = threading.Thread(target=lambda: run(history.extend, studio, song_id, 1))
    worker.start()
    try:
        assert started.wait(timeout=60)
        for step in (history.ask_delete, history.delete):
            with pytest.raises(gr.Error, match=r"in use \(a job is extending it now\)"):
                user_errors(step)(studio, song_id)
    finally:
        release.set()
        worker.join()
        studio.stats.progress = original
    user_errors(history.delete)(studio, song_id)  # once it is done, it can go
    assert song_id not in [s.id for s in studio.history.list()]


@pytest.mark.parametrize("action", ["unload", "load"])
def test_unload_or_load_while_a_song_is_made_says_to_wait(studio, tiny_ckpt, action):
    """Unload (or Load another model) pressed while a song is being made: the page is not held
    until the song ends, nothing is freed under it; it says what to do."""
    engine = studio.engine
    inside, release = threading.Event(), threading.Event()

    def hold(p):
        inside.set()
        release.wait()

    job = threading.Thread(target=engine.generate_frames, args=("la", "pop", GenerateOptions(max_audio_length_ms=400)),
                           kwargs=dict(on_progress=hold))
    job.start()
    inside.wait()
    try:
        press = (lambda: settings.unload(studio)) if action == "unload" else (
            lambda: settings.load(studio, str(tiny_ckpt), "tiny", "cpu", "float32", True))
        answer = {}

        def pressing():
            try:
                user_errors(press)()
            except gr.Error as e:
                answer["error"] = str(e)

        presser = threading.Thread(target=pressing, daemon=True)
        presser.start()
        presser.join(timeout=60)  # the answer comes at once; a handler that waits for the song never answers
        assert not presser.is_alive(), "the page waits for the song to end"
        assert "a song is being made" in answer.get("error", ""), answer
        assert studio.engine is engine and engine.mula is not None
    finally:
        release.set()
        job.join()


def test_a_run_waiting_for_another_job_says_so(studio):
    """Reviewer: a second page's run said only "Waiting for the engine…" while another page's
    song was made; it now says another job is running and that this one starts after it."""
    session = Session()
    assert "another job" not in common.start(session, studio)["status"]  # idle: nothing to wait for
    inside, release = threading.Event(), threading.Event()

    def hold(p):
        inside.set()
        release.wait()

    job = threading.Thread(target=studio.engine.generate_frames, args=("la", "pop", GenerateOptions(max_audio_length_ms=400)),
                           kwargs=dict(on_progress=hold))
    job.start()
    inside.wait()
    try:
        status = common.start(session, studio)["status"]
        assert "another job" in status and "starts when it ends" in status, status
    finally:
        release.set()
        job.join()


def test_loaded_now_follows_models_that_load_by_themselves(studio):
    """Reviewer: after Unload, a song loads the models again, but "Loaded now" kept saying
    nothing until the next Load. The Settings tab's timer refreshes that line too."""
    user_errors(settings.unload)(studio)
    assert "nothing" in settings.live(studio)["engine_status"]
    run(generate.generate, *gen_args(studio, Session()))
    assert "Loaded now: language model, codec" in settings.live(studio)["engine_status"]


def test_compare_with_a_blank_seed_draws_one_for_every_preset(studio):
    """Reviewer: the seed box said "blank: a fresh random seed" but held 1234, and blank was
    refused. Blank now draws one seed, the same for every preset (so they start alike), and
    says which; a fresh page's box is blank."""
    import re

    from ui.blocks import build_ui

    outs = run(compare.compare, studio, Session(), ["test-full", "speed"], LYRICS, "pop", 1.6, "")
    status = outs[-1]["status"]
    seed = re.search(r"seed (\d+)", status).group(1)
    players = [o["audios"] for o in outs if "audios" in o][-1]
    labels = [a["label"] for a in players if a.get("visible")]
    assert len(labels) == 2 and all(label.endswith(f"seed {seed}") for label in labels), (status, labels)
    blocks = build_ui(studio.engine, output_dir=studio.history.folder, demo=False)
    box = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "cmp-seed")
    assert box.value in ("", None)


def test_a_song_made_from_another_is_named_after_it(studio):
    """Reviewer: a renamed song, extended, gave a song titled by some sung line ("after close"),
    and the next Regenerate ran on that one with no name the musician knew. Songs made from a
    song carry its title and what was done."""
    run(generate.generate, *gen_args(studio, Session(), seed=32))
    parent = studio.history.list()[0]
    history.save_title(studio, parent.id, "Ballade für Zoë 🎹")
    def title(song_id: str) -> str:
        return studio.history.find(ids=[song_id])[0][0].title

    out = user_errors(history.extend)(studio, parent.id, 0.96, "")
    longer = out["song"]
    assert title(longer) == "Ballade für Zoë 🎹 · extended"
    out = user_errors(history.regenerate)(studio, longer, "0:01", 1, "")
    assert title(out["song"]) == "Ballade für Zoë 🎹 · extended · regenerated from 0:00.96"  # 0:01, to the frame
    assert "Ballade für Zoë 🎹 · extended" in out["continue_status"]  # the song it was made from, by name


def test_a_model_loaded_from_settings_is_warmed_like_the_first(studio, tiny_ckpt):
    """Issue 19's promise after a Load too: the studio warms the engine that Load made (its
    likely request shapes, in the background), not only the one it started with."""
    studio.warm = True
    try:
        user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", False)
        assert studio.warm_thread is not None
        studio.warm_thread.join()
        assert studio.engine.reserved and studio.engine._ready  # its caches and step buffers are made
    finally:
        studio.warm = False
        studio.engine.unload()


def test_load_again_under_lazy_load_loads_nothing(studio, tiny_ckpt):
    """Reviewer 2: the same lazy-load settings, loaded in one tab then in another, showed
    "nothing loaded" in the first and both models in the second. Lazy load loads on use."""
    user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", True)
    out = user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", True)
    assert studio.engine.mula is None and studio.engine.codec is None
    assert "nothing (loads on first use)" in out["engine_status"]


def test_takes_made_from_a_song_are_told_apart(studio, monkeypatch):
    """Reviewer 2: two takes regenerated from a song had one title, the status one seed, and
    the toast named the song they came from by its id alone."""
    toasts = []
    monkeypatch.setattr(history, "info", toasts.append)
    run(generate.generate, *gen_args(studio, Session(), seed=33))
    parent = studio.history.list()[0]
    history.save_title(studio, parent.id, "Sunrise Jam")
    out = user_errors(history.regenerate)(studio, parent.id, "0:01", 2, "")
    made = [s for s in studio.history.list() if s.meta.get("parent", {}).get("id") == parent.id]
    titles = sorted(studio.history.find(ids=[s.id])[0][0].title for s in made)
    assert titles == ["Sunrise Jam · regenerated from 0:00.96 · take 1", "Sunrise Jam · regenerated from 0:00.96 · take 2"]
    seeds = sorted(s.seed for s in made)
    assert all(f"seed {seed}" in out["continue_status"] or f"seeds {seeds[0]}, {seeds[1]}" in out["continue_status"]
               for seed in seeds), out["continue_status"]
    assert "“Sunrise Jam”" in toasts[-1], toasts


def _first_status(steps, containing: str) -> str:
    """The first status line of a job's messages that contains `containing` (fails at the job's end)."""
    for out in steps:
        status = out.get("status", "")
        if containing in status:
            return status
    pytest.fail(f"the job ended without a status containing {containing!r}")


def test_stop_on_a_run_waiting_for_another_ends_it_at_once_and_the_rest_queue(studio):
    """Tester: Stop on a run still waiting behind another tab's song stayed on "Stopping…" until
    that song ended. A run waiting for the device says so, a Stop ends it at once (it never
    reaches the engine), the song it waited for goes on, and a Compare waits its turn too."""
    import time

    a, b, c = Session(), Session(), Session()
    inside, release = threading.Event(), threading.Event()

    def hold(p):  # A's progress reports: A holds the device until released
        inside.set()
        release.wait(timeout=60)

    studio.stats.progress, original = hold, studio.stats.progress
    outs_a = []
    worker = threading.Thread(target=lambda: outs_a.extend(run(generate.generate, *gen_args(studio, a))))
    worker.start()
    try:
        assert inside.wait(timeout=60)
        assert "another job" in common.start(b, studio)["status"]
        steps = user_errors(generate.generate)(*gen_args(studio, b, seed=12))
        assert "Waiting for another song to finish" in _first_status(steps, "Waiting")
        common.stop(b)
        t = time.monotonic()
        rest = list(steps)
        assert time.monotonic() - t < 1.0, "the waiting run did not end at once"
        assert rest[-1]["status"].startswith("⏹ Stopped before it started"), rest
        assert common.finish(rest[-1]["status"]) == {"run_btn": gr.update(interactive=True),
                                                     "stop_btn": gr.update(interactive=False)}
        assert worker.is_alive() and not outs_a  # A was never touched
        common.start(c, studio)
        comparing = user_errors(compare.compare)(studio, c, ["test-full", "speed"], LYRICS, "pop", 1.6, 42)
        assert "Waiting for another song to finish" in _first_status(comparing, "Waiting")
    finally:
        release.set()
        worker.join()
        studio.stats.progress = original
    assert "✅" in outs_a[-1]["status"] and len(studio.history.list()) == 1  # A's song, and only it
    assert "compared 2 presets" in list(comparing)[-1]["status"]
    assert not studio.turns.busy and not studio.engine.busy


def test_device_jobs_take_their_turns_in_the_order_they_asked():
    """Studio.turns: one job at a time, first come first served; a job that leaves the line while
    waiting (stopped, or its page closed) lets the next one go in its place."""
    from ui.studio import Turns

    turns, order = Turns(), []
    with turns.take("a song") as first:
        assert first.wait(0) and first.ahead() == []
        with turns.take("a comparison") as second:
            assert not second.wait(0) and second.ahead() == ["a song"]

            def third_job():
                with turns.take("a transcription") as third:
                    assert third.ahead() == ["a song", "a comparison"]
                    third.wait(timeout=60)
                    order.append("a transcription")

            worker = threading.Thread(target=third_job)
            worker.start()
            while len(turns._line) < 3:  # the third is in line (a wait on state, not on time)
                threading.Event().wait(0.001)
        # the second left while waiting (a Stop): the third is next, but not while the first runs
        assert order == []
        order.append("a song")
    worker.join(timeout=60)
    assert order == ["a song", "a transcription"] and not turns.busy


@pytest.mark.parametrize("takes,message", [
    (9, "Takes: takes=9 is out of range; allowed: 1 to 8"),
    (2.5, "Takes: takes must be a whole number, got 2.5"),
    (None, "Takes: takes is empty; enter a number (1 to 8)"),
])
def test_regenerate_takes_are_checked_by_the_option_declaration(studio, takes, message):
    """History's Takes control is GenerateOptions.takes: its range is the declared one (the
    tab and the handler each held their own 1 to 8)."""
    with pytest.raises(gr.Error) as e:
        user_errors(history.regenerate)(studio, "no-such-song", "0:01", takes, "")
    assert e.value.message == message


def test_a_song_deleted_in_another_tab_is_said_and_the_list_follows(studio):
    """A tab still lists a song another tab (or window, or the CLI's folder) deleted. Whatever
    is done to it there says it was deleted elsewhere and lists again: the count, the rows and
    the pick follow the folder; nothing polls."""
    from test_history import _result

    (gone,) = studio.history.save(_result(seed=1))
    (kept,) = studio.history.save(_result(seed=2))
    assert "2 song(s)" in history.refresh(studio, gone.id)["status"]  # this tab, before
    run(history.delete, studio, gone.id, "", False)  # another tab
    acts = {
        "select": lambda: history.select(studio, gone.id, "", False),
        "save_title": lambda: history.save_title(studio, gone.id, "x", "", False),
        "favourite": lambda: history.toggle_favourite(studio, gone.id, "", False),
        "ask_delete": lambda: history.ask_delete(studio, gone.id, "", False),
        "delete": lambda: history.delete(studio, gone.id, "", False),
        "reuse": lambda: history.reuse(studio, gone.id, history.SAME_SEED, "", False),
        "variants": lambda: history.variants(studio, gone.id, "", False),
        "extend": lambda: history.extend(studio, gone.id, 1, ""),
        "regenerate": lambda: history.regenerate(studio, gone.id, "0:01", 1, ""),
    }
    for name, act in acts.items():
        (out,) = run(act)
        assert out["song"] is None and [r[history.COL["ID"]] for r in out["table"]] == [kept.id], name
        assert "1 song(s) in" in out["status"] and f"`{gone.id}` was deleted in another tab or window" in out["status"], name
        assert "tabs" not in out, name  # the page stays on History
    assert "continue_status" in run(acts["extend"])[0] and "deleted" in run(acts["extend"])[0]["continue_status"]
    assert history.refresh(studio)["status"].startswith("1 song(s) in")  # the next listing has no warning


def test_settings_says_what_a_run_would_refuse_and_never_changes_a_value():
    """Tester: Settings took 700 for the temperature and 0 for the batch size in silence."""
    values = settings.preset_values("balanced")
    row = {name: values[name] for name in settings.PRESET_FIELDS}
    assert settings.values_problems(*row.values()) == {"values_note": ""}
    row.update(temperature=700, batch_size=0)
    note = settings.values_problems(*row.values())["values_note"]
    assert note.startswith("⚠️ A run would refuse:") and "Temperature: temperature=700" in note
    assert "batch_size=0" in note
