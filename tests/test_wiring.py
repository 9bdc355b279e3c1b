"""ui/wiring.py's glue between handlers (which return {name: value}) and gradio's events."""

from __future__ import annotations

import asyncio

import gradio as gr

from ui.wiring import _named


def test_a_handler_that_changes_nothing_leaves_every_output_as_it_is():
    """Reviewer: every Settings preset pick without `quant` raised in gradio ("didn't return enough
    output values (needed: 2, returned: 1)"): the weights handler returned {}, which gradio takes
    for one value, not for "no changes"."""
    with gr.Blocks() as demo:
        quant, note, button = gr.Dropdown(choices=["none", "int8"]), gr.Markdown(), gr.Button()
        handler = _named(lambda: {}, {"quant": quant, "quant_note": note})
        button.click(handler, None, [quant, note])
    fn = demo.fns[0] if isinstance(demo.fns, list) else next(iter(demo.fns.values()))
    out = asyncio.run(demo.postprocess_data(fn, handler(), None))
    assert len(out) == 2


# ----- a generator's messages, as a page that falls behind applies them ------------------------------
# gradio streams a generator's outputs as diffs against the previous message, and its page (6.x) applies
# each diff in place to the objects the earlier messages handed over: a message the page has not yet
# processed reads what the later ones left there. An update set by one message and left out of the next
# ({"__type__": "update"}, every key deleted) is lost on a slow page. Found in the studio: on a page
# throttled 12x (a phone, a loaded laptop) a stopped take's player never appeared though its note did.


def _page_behind(messages: list[list]) -> list[list]:
    """What a page sees when every message of a run arrives before it processes the first: the
    server's diffs (gradio.utils.diff) applied in place, as the page does, to shared objects."""
    from gradio.utils import diff

    def apply(obj, edits):
        for action, path, value in edits:
            if not path:
                obj = value if action == "replace" else obj + value
                continue
            parent = obj
            for key in path[:-1]:
                parent = parent[key]
            if action in ("replace", "add"):
                parent[path[-1]] = value
            elif action == "append":
                parent[path[-1]] += value
            else:
                del parent[path[-1]]
        return obj

    store = [dict(v) if isinstance(v, dict) else v for v in messages[0]]
    seen = [list(store)]
    for prev, new in zip(messages, messages[1:]):
        seen.append([])
        for i, (a, b) in enumerate(zip(prev, new)):
            store[i] = apply(store[i], diff(a, b))
            seen[-1].append(store[i])
    return seen  # message k's values, read after the last one arrived


def _messages(demo, handler) -> list[list]:
    """A generator handler's messages as gradio sends them: each yield through gradio's own
    postprocessing (which takes the value out of an update dict as it goes), one value per output."""
    fn = demo.fns[0] if isinstance(demo.fns, list) else next(iter(demo.fns.values()))
    return [asyncio.run(demo.postprocess_data(fn, out, None)) for out in handler()]


def _seen(messages: list[list], names: list[str]) -> dict:
    """Each output's props once a page that fell behind has applied every message in order."""
    state = {}
    for values in _page_behind(messages):
        for name, v in zip(names, values):
            if isinstance(v, dict) and v.get("__type__") == "update":
                state.setdefault(name, {}).update({k: x for k, x in v.items() if k != "__type__"})
            else:
                state.setdefault(name, {})["value"] = v
    return state


def test_a_jobs_last_message_restates_the_updates_a_slow_page_would_lose(tmp_path):
    import numpy as np
    import soundfile as sf

    so_far = tmp_path / "take1-so-far.wav"
    sf.write(so_far, np.zeros((4800, 2), np.float32), 48_000)

    def stopped_job():
        yield {"status": "Generating 40 %", "note": "playing", "take": gr.update(value=None, visible=False)}
        yield {"note": "stopped 0.2 s after Stop; what was made stays below",
               "take": gr.update(value=str(so_far), visible=True, label="Take 1 (not saved)")}
        yield {"status": "Stopped. Nothing was saved."}

    with gr.Blocks() as demo:
        status, note, take = gr.Markdown(), gr.Markdown(), gr.Audio(type="filepath", visible=False)
        button = gr.Button()
        handler = _named(stopped_job, {"status": status, "note": note, "take": take})
        button.click(handler, None, [status, note, take])
    messages = _messages(demo, handler)
    state = _seen(messages, ["status", "note", "take"])
    assert state["take"]["visible"] is True and state["take"]["label"] == "Take 1 (not saved)"
    assert state["take"]["value"]["path"].endswith(".wav"), state["take"]  # the file, not an empty player
    assert state["status"]["value"] == "Stopped. Nothing was saved."
    assert state["note"]["value"].startswith("stopped")
    assert messages[-1][1] == gr.update()  # a text cannot be lost (a diff replaces it): not repeated


def test_a_failing_job_restates_before_the_error_and_streams_are_never_repeated():
    with gr.Blocks():
        status, live, button = gr.Markdown(), gr.Audio(streaming=True), gr.Button(visible=False)

    def job():
        yield {"live": b"piece", "play_now": gr.update(visible=True)}
        yield {"play_now": gr.update(visible=False), "status": "making"}
        yield {"status": "still making"}
        raise ValueError("the codec ran out of memory")

    handler = _named(job, {"status": status, "live": live, "play_now": button})
    out = []
    try:
        for values in handler():
            out.append(values)
    except gr.Error as e:
        assert "out of memory" in e.message
    else:
        raise AssertionError("the error was swallowed")
    assert out[-1] == {button: gr.update(visible=False)}  # the latest, once more, before the error
    assert all(live not in o for o in out[1:])  # a stream's piece sent twice would play twice


def test_device_jobs_run_their_handlers_at_once_and_wait_in_the_studio(tiny_ckpt):
    """Tester: a run held in gradio's queue (one concurrency id, limit 1) behind another tab's song
    could not be stopped: none of our code ran until its turn. Every device job now reaches its
    handler, which waits for the device in the studio (Studio.turns) where Stop reaches it."""
    from heartmula import load_engine
    from ui import wiring
    from ui.blocks import build_ui

    demo = build_ui(load_engine(str(tiny_ckpt), version="tiny", device="cpu"))
    fns = demo.fns if isinstance(demo.fns, list) else list(demo.fns.values())
    device = [fn for fn in fns if fn.concurrency_id == wiring.ENGINE]
    names = {fn.api_name for fn in device}
    assert {"generate", "compare", "transcribe", "extend", "regenerate"} <= names, names
    assert all(fn.concurrency_limit == wiring.ENGINE_JOBS > 1 for fn in device), [
        (fn.api_name, fn.concurrency_limit) for fn in device]
