"""Issue 16 at the handler level: what the server log says about a user's mistake, the one
progress line of a generation, the Settings Job row, History's two-step delete and Reuse's
seed choice, and preset deletion's fallbacks (real engine on the tiny checkpoint, no browser)."""

from __future__ import annotations

import logging

import gradio as gr
import pytest

from heartmula import DEFAULT_PRESET, History, load_engine
from ui.errors import INTERNAL, user_errors
from ui.handlers import common, generate, history, settings
from ui.session import Session
from ui.studio import Studio

LYRICS = "[verse]\nhello world\n[chorus]\nsing it loud\n"
SHOWN = dict(max_audio_length_ms=1.6, cfg_scale=1.5, temperature=1.0, topk=50, takes=1, ignore_eos=True,
             codec_steps=2, codec_guidance_scale=1.25, batch_size=4, chunk_length_s=30)


@pytest.fixture(scope="module")
def engine(tiny_ckpt):
    return load_engine(str(tiny_ckpt), version="tiny", device="cpu")


@pytest.fixture()
def studio(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("HEARTMULA_HOME", str(tmp_path / "home"))
    settings.save(None, "test-full", "", *[SHOWN[n] for n in settings.PRESET_FIELDS])
    return Studio(engine=engine, history=History(tmp_path / "outputs"), temp_dir=tmp_path / "tmp")


def gen_args(studio, session, *, lyrics=LYRICS, seed="7"):
    shown = {**SHOWN, "seed": seed}
    return (studio, session, lyrics, "pop", *[shown[n] for n in generate.GEN_NAMES])


def run(fn, *args):
    out = user_errors(fn)(*args)
    return list(out) if not isinstance(out, dict) else [out]


# ----- C: the log ------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [ValueError("lyrics are empty; write some lyrics"),
                                   gr.Error("pick a song to delete")], ids=["ValueError", "gr.Error"])
def test_a_user_mistake_logs_one_info_line(caplog, error):
    def refuse():
        raise error

    caplog.set_level(logging.INFO, logger="heartmula.studio")
    with pytest.raises(gr.Error) as e:
        user_errors(refuse)()
    assert e.value.print_exception is False  # gradio prints no traceback either
    records = [r for r in caplog.records if r.name == "heartmula.studio"]
    assert [(r.levelno, r.exc_info) for r in records] == [(logging.INFO, None)], records
    assert str(error.args[0]) in records[0].getMessage() and "\n" not in records[0].getMessage()


def test_a_user_mistake_in_a_job_logs_one_info_line(caplog, studio):
    caplog.set_level(logging.INFO, logger="heartmula.studio")
    with pytest.raises(gr.Error, match="lyrics are empty"):
        run(generate.generate, *gen_args(studio, Session(), lyrics="  "))
    records = [r for r in caplog.records if r.name == "heartmula.studio"]
    assert len(records) == 1 and records[0].levelno == logging.INFO and not records[0].exc_info


def test_a_real_fault_logs_its_traceback(caplog):
    def broken():
        raise KeyError("boom")

    with pytest.raises(gr.Error, match=INTERNAL) as e:
        user_errors(broken)()
    assert e.value.print_exception is False  # logged once, by us
    (record,) = [r for r in caplog.records if r.name == "heartmula.studio"]
    assert record.levelno == logging.ERROR and record.exc_info and "boom" in caplog.text


# ----- D: one progress line, moving forward ---------------------------------------------------------
STEPS = ["Starting", "Reading the prompt", "Generating frames", "Decoding audio", "Saving to History", "take(s)"]


def _step(text: str) -> int:
    return next(i for i, s in enumerate(STEPS) if s in text)


def test_generate_status_moves_forward_with_no_flicker(studio, monkeypatch):
    monkeypatch.setattr(common, "HEARTBEAT_S", 0.005)  # many heartbeats between progress reports
    jobs = []  # the Settings Job row as each status line is shown
    statuses = []
    for out in user_errors(generate.generate)(*gen_args(studio, Session())):
        if "status" in out:
            statuses.append(out["status"])
            jobs.append(settings.live(studio)["live"].split("\n")[2])
    steps = [_step(s) for s in statuses]
    assert steps == sorted(steps), statuses  # never back to an earlier step (no "Starting…" flicker)
    assert set(steps) >= set(range(1, len(STEPS))), statuses  # and every step after "Starting" is shown
    # while the status says decoding, the Job row says decode (not "frames n/n")
    decoding = [j for s, j in zip(statuses, jobs) if "Decoding audio" in s]
    assert decoding and all("decode" in j for j in decoding), decoding
    saving = [j for s, j in zip(statuses, jobs) if "Saving" in s]
    assert saving and all("saving" in j for j in saving), saving
    assert "idle" in settings.live(studio)["live"]


def test_progress_line_ignores_a_step_back():
    from heartmula import Progress

    line = common.ProgressLine()
    texts = [line(p) for p in [Progress("frames", 5, 10, 1.0, 5.0, 1.0), None, Progress("decode", 0, 4, 0, 0, None),
                               Progress("frames", 10, 10, 2.0, 5.0, 0.0), None, Progress("decode", 1, 4, 1, 1, 3)]]
    assert [t.split()[1] for t in texts] == ["Generating", "Generating", "Decoding", "Decoding", "Decoding",
                                             "Decoding"], texts
    assert "1 / 4" in texts[-1]


# ----- B, G: History delete in two steps, reuse with the same or a new seed --------------------------
def test_history_delete_asks_first_and_selects_nothing_after(studio):
    session = Session()
    for seed in ("5", "6"):
        run(generate.generate, *gen_args(studio, session, seed=seed))
    newest = history.refresh(studio)["song"]
    ask = history.ask_delete(studio, newest)
    assert ask["confirm_row"]["visible"] is True and "seed 6" in ask["confirm_text"]
    assert len(studio.history.list()) == 2  # asking deletes nothing
    assert history.cancel_delete()["confirm_row"]["visible"] is False
    after = run(history.delete, studio, newest)[0]
    assert after["song"] is None and [r[history.COL["Seed"]] for r in after["table"]] == ["5"]
    assert after["confirm_row"]["visible"] is False
    with pytest.raises(gr.Error, match="pick a song"):  # a second click has nothing to delete
        run(history.delete, studio, after["song"])
    assert len(studio.history.list()) == 1


@pytest.mark.parametrize("choice,seed", [(history.SAME_SEED, "9"), (history.NEW_SEED, "")])
def test_reuse_restores_every_option_and_the_seed_when_asked(studio, choice, seed):
    run(generate.generate, *gen_args(studio, Session(), seed="9"))
    song = history.refresh(studio)["song"]
    out = history.reuse(studio, song, choice)
    values = dict(zip(generate.GEN_NAMES, out["options"]))
    assert values["seed"] == seed
    assert values["max_audio_length_ms"] == pytest.approx(1.6) and values["codec_steps"] == 2
    assert values["ignore_eos"] is True and out["lyrics"] == LYRICS


# ----- A: a deleted preset ----------------------------------------------------------------------------
def test_deleting_a_preset_in_use_falls_back(studio):
    run(settings.save, studio, "short", "", *[SHOWN[n] for n in settings.PRESET_FIELDS])
    out = run(settings.delete, studio, "short", "short", "short", ["short", "speed"])[0]
    assert out["generate_preset"]["value"] == DEFAULT_PRESET and "short" in out["generate_preset_info"]
    assert "short" not in out["generate_preset"]["choices"]
    assert out["transcribe_preset"]["value"] is None and out["compare_presets"]["value"] == ["speed"]
    kept = run(settings.delete, studio, "test-full", "speed", None, [])[0]
    assert "generate_preset_info" not in kept and "value" not in kept["generate_preset"]  # Generate keeps its pick
    # A run takes its options from the tab's controls, never from the picked preset's name: a
    # preset deleted in another tab cannot break it.
    outs = run(generate.generate, *gen_args(studio, Session()))
    assert "✅" in outs[-1]["status"]


def test_a_new_preset_does_not_inherit_a_description(studio):
    values = settings.preset_values(DEFAULT_PRESET)
    assert values["description"]["value"] == "" and "official" in values["description"]["placeholder"].lower()


def test_a_new_job_leaves_a_stopped_job_stopped():
    """Stop, then Generate again while the stopped job's last codec window still finishes in the
    background: the old job keeps seeing its Stop (a cleared flag would make it decode the rest of
    its song, and the new job would wait for all of it)."""
    from ui.handlers import common

    session = Session()
    old = session.cancel
    common.stop(session)
    common.start(session)
    assert old.is_set() and not session.cancel.is_set() and session.cancel is not old
