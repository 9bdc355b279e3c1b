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

from heartmula import History, load_engine
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
    assert not any("audios" in o for o in seen)  # ended without results
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
    assert [row[3] for row in listed["table"]] == ["6", "5"]  # newest first; seeds as text, exact in a browser
    newest = listed["song"]["value"]
    picked = history.select(studio, newest)
    assert Path(picked["player"]).suffix == ".wav" and picked["details"]["seed"] == 6
    reuse = history.reuse(studio, newest)
    values = gen_values(reuse)
    assert values["seed"] == "6" and values["cfg_scale"] == 2.5 and reuse["lyrics"] == LYRICS
    assert values["max_audio_length_ms"] == pytest.approx(1.6) and values["codec_steps"] == 2
    after = user_errors(history.delete)(studio, newest)
    assert [row[3] for row in after["table"]] == ["5"] and after["player"] is None
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
    players = [o["audios"] for o in outs if "audios" in o][-1]
    assert sum(bool(a.get("visible")) for a in players) == 2
    assert studio.history.list() == []  # compare renders are temporary
    with pytest.raises(gr.Error, match="pick 2 to 4"):
        run(compare.compare, studio, Session(), ["speed"], LYRICS, "pop", 2, 1)


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
    assert "int8 weights (experimental)" in text and "peak memory" in text
    song = studio.history.list()[0]
    sidecar = json.loads(song.sidecar_path.read_text())
    assert sidecar["model"]["quant"] == "int8"
    with pytest.raises(gr.Error, match="weights must be one of none, int8, got 'int4'"):
        user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", False, settings.SAME, "int4")
    back = user_errors(settings.load)(studio, str(tiny_ckpt), "tiny", "cpu", "float32", False, settings.SAME, "none")
    assert studio.engine.config.quant == "none" and "weights **not quantized**" in back["engine_status"]


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
    assert sorted(r[3] for r in rows) == [str(big), str(big + 1)]
    details = history.select(studio, rows[0][5])["details"]
    assert details["seed"] in (str(big), str(big + 1)) and details["take"] in (0, 1)
    assert json.loads(studio.history.get(rows[0][5]).sidecar_path.read_text())["seed"] in (big, big + 1)  # disk: ints


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
    longer = studio.history.get(out["song"]["value"])
    assert longer.meta["parent"] == {"sidecar": f"{parent.id}.json", "id": parent.id, "mode": "extend",
                                     "from_frame": 20, "at_s": 1.6}
    assert longer.frames().shape == (32, 8) and longer.seed == 31
    np.testing.assert_array_equal(longer.frames()[:20], parent.frames())
    assert "✅ extended" in out["continue_status"]
    out = user_errors(history.regenerate)(studio, longer.id, "0:01", 2, "")
    redo = [s for s in studio.history.list() if s.meta.get("parent", {}).get("mode") == "regenerate"]
    assert len(redo) == 2 and all(s.meta["parent"]["id"] == longer.id and s.meta["parent"]["from_frame"] == 12
                                  for s in redo)
    for s in redo:
        np.testing.assert_array_equal(s.frames()[:12], longer.frames()[:12])
    rows = {r[5]: r[6] for r in history.refresh(studio)["table"]}
    assert rows[longer.id] == f"extend of {parent.id} at 0:01.60" and rows[parent.id] == ""
    for bad, message in ((lambda: history.regenerate(studio, parent.id, "0:09", 1, ""), "give a time from 0:00.08"),
                         (lambda: history.regenerate(studio, parent.id, "1:75", 1, ""), "write it as m:ss"),
                         (lambda: history.extend(studio, parent.id, "abc", ""), "seconds to add must be a number"),
                         (lambda: history.extend(studio, None, 1, ""), "pick a song"),
                         (lambda: history.extend(studio, parent.id, 60, ""), "plus at most")):
        with pytest.raises(gr.Error, match=message):
            user_errors(bad)()
    parent.codes_path.unlink()  # a song saved before codes were kept
    with pytest.raises(gr.Error, match="saved without its codes"):
        user_errors(history.extend)(studio, parent.id, 1, "")


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
