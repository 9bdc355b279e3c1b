"""All event wiring, and the only place that calls .click/.change/.then.

Handlers return (or yield) dicts keyed by names; `_on` maps those names to this UI's
components, wraps the handler in `user_errors`, and reaches the Studio through partial.
Long engine jobs queue behind each other (one device) in the studio (Studio.turns), not in
gradio's queue, so a Stop reaches a job still waiting; Stop buttons and cheap toggles skip the queue.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from functools import partial

import gradio as gr

from heartmula import DEFAULT_PRESET, GenerateOptions, TranscribeOptions, options_of, shown_name

from .errors import user_errors
from .handlers import common
from .handlers import compare as compare_h
from .handlers import generate as generate_h
from .handlers import history as history_h
from .handlers import settings as settings_h
from .handlers import transcribe as transcribe_h

ENGINE = "engine"  # the concurrency id of every job that uses the device
# How many of them gradio lets run at once: one on the device, the rest waiting for it in their
# handlers (Studio.turns), where a Stop reaches them. gradio's own queue holds any beyond these, and
# a job held there cannot be stopped until it gets here. A waiting job keeps a worker thread of
# gradio's pool (40) busy: the pool's other users (every click outside the queue) keep theirs.
ENGINE_JOBS = 8
DEVICE_JOB = dict(concurrency_id=ENGINE, concurrency_limit=ENGINE_JOBS)
# Load and Unload queue behind each other, not behind a song: pressed during one, they answer at
# once (the handler refuses) instead of waiting for it and then running unasked.
MODELS = "models"
QUICK = dict(queue=False, show_progress="hidden", api_visibility="undocumented")
# Cheap steps that report with a toast (gr.Info / gr.Warning reach the page only from queued events).
TOAST = dict(show_progress="hidden", api_visibility="undocumented")


def _flatten(targets: dict) -> list:
    out = []
    for t in targets.values():
        for c in (t if isinstance(t, list) else [t]):
            if c not in out:
                out.append(c)
    return out


def _convert(targets: dict, values: dict | None) -> dict:
    out = {}
    for name, value in (values or {}).items():
        target = targets[name]  # a KeyError here is a wiring bug: the handler returned an unknown name
        if isinstance(target, list):
            for component, v in zip(target, value):
                out[component] = v
        else:
            out[target] = value
    # gradio reads an empty dict as one value, not as "no changes": say "unchanged" for each output
    return out or {component: gr.update() for component in _flatten(targets)}


def _restating(messages):
    """A generator's messages, and at its end (done or failed) one more with every update it set
    earlier and left out of its last message, as it was last set.

    gradio streams a generator's outputs as diffs against its previous message, and its page (6.x)
    applies them in place to the objects the earlier messages handed over. A page that falls behind
    (a phone, a loaded laptop) reads a message after the next one has arrived, and an update left
    out of the next message has had its keys deleted by then: a stopped take's player never showed.
    The last message is never diffed against, so whatever a slow page skipped, it ends right. Texts
    and lists are replaced whole by a diff, never emptied; a stream's pieces would play twice."""
    latest, last = {}, {}

    def left_out() -> Iterator[dict]:
        if again := {c: v for c, v in latest.items() if last.get(c, gr.update()) == gr.update()}:
            yield again

    try:
        for last in messages:
            # copies: gradio takes the value out of an update dict as it sends it
            latest.update({c: dict(v) for c, v in last.items() if isinstance(v, dict) and v != gr.update()
                           and not getattr(c, "streaming", False)})
            yield last
    except Exception:
        yield from left_out()
        raise
    yield from left_out()


def _named(fn, targets: dict, api_names: list[str] | None = None):
    """fn returning {name: value} -> a gradio function returning {component: value}.
    `api_names`: the names its inputs carry in the API (gradio reads them off the signature),
    where fn takes them as *values."""
    fn = user_errors(fn)
    if inspect.isgeneratorfunction(fn):
        def wrapper(*args):
            yield from _restating(_convert(targets, values) for values in fn(*args))
    else:
        def wrapper(*args):
            return _convert(targets, fn(*args))
    wrapper.__name__ = getattr(fn, "__name__", "handler")
    wrapper.__signature__ = inspect.signature(fn) if api_names is None else inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in api_names])
    return wrapper


def _on(trigger, fn, inputs, targets: dict, **kwargs):
    kwargs.setdefault("api_visibility", "undocumented")
    return trigger(_named(fn, targets), inputs=inputs, outputs=_flatten(targets), **kwargs)


# Stop's status, written by the page as the click happens (see common.STOPPING); a status that
# already says how the job ended stays.
STOP_JS = f"(status) => /^(✅|❌|⏹)/u.test(status || '') ? status : {json.dumps(common.STOPPING + '…')}"


def _stop_button(button, session, run_targets: dict) -> None:
    button.click(None, inputs=[run_targets["status"]], outputs=[run_targets["status"]], js=STOP_JS, **QUICK)
    _on(button.click, common.stop, [session], {"stop_btn": run_targets["stop_btn"]}, **QUICK)


def _run_chain(studio, button, session, job_fn, job_inputs, job_outputs: dict, run_targets: dict, **job_kwargs):
    """Run button -> start (buttons swap) -> the job -> finish (buttons back), whatever the job
    did. Gradio's frontend runs a `.then` only after a success, so finish also hangs off
    `.failure` (a job error, or an input gradio itself refused before the job ran).
    Returns the finish step of the success path, for what comes after a good run."""
    job = _on(button.click, partial(common.start, studio=studio), [session], run_targets, **QUICK).then(
        _named(job_fn, job_outputs, job_kwargs.pop("api_names", None)), inputs=job_inputs,
        outputs=_flatten(job_outputs), **job_kwargs)
    finish = dict(fn=_named(common.finish, run_targets), inputs=[run_targets["status"]],
                  outputs=_flatten(run_targets), **QUICK)
    job.failure(**finish)
    return job.then(**finish)


def wire(demo, studio, tabs, gen, hist, tr, st, cmp) -> None:
    preset_targets = {"settings_preset": st.preset, "generate_preset": gen.preset,
                      "compare_presets": cmp.presets, "transcribe_preset": tr.preset,
                      "preset_problems": st.preset_problems}
    history_targets = {"table": hist.table, "song": hist.song, "status": hist.status}
    hist_list_inputs = [hist.song, hist.search, hist.favourites_only]  # what refresh lists around
    hist_select_targets = {"player": hist.player, "downloads": hist.downloads, "details": hist.details,
                           "confirm_row": hist.confirm_row, "now": hist.now, "title": hist.title,
                           "favourite": hist.favourite_btn, "regen_at": hist.regen_at}

    # ----- Generate ------------------------------------------------------------------------------
    gen_run = {"run_btn": gen.generate_btn, "stop_btn": gen.stop_btn, "status": gen.status}
    gen_option_list = [gen.options[n] for n in generate_h.GEN_NAMES]
    tr_option_list = [tr.options[n] for n in generate_h.TR_NAMES]
    gen_controls = {"options": gen_option_list, "preset_info": gen.preset_info}
    # .select: once per pick (a dropdown's .input fires again when it loses focus, and a late
    # second answer would undo what was typed in between)
    # a preset naming weights also sets the Settings choice (a Load there applies it)
    weights_targets = {"quant": st.quant, "quant_note": st.quant_note}
    _on(gen.preset.select, partial(generate_h.pick_preset, studio), [gen.preset], {**gen_controls, **weights_targets},
        **QUICK)
    for picker in gen.pickers:
        _on(picker.input, generate_h.add_tag, [gen.tags, picker], {"tags": gen.tags, "picker": picker}, **QUICK)
    gen.dice.click(generate_h.random_seed, outputs=[gen.options["seed"]], **QUICK)
    gen_inputs = [gen.session, gen.lyrics, gen.tags, *gen_option_list]
    gen_api = ["session", "lyrics", "tags"] + [shown_name(n, o) for n, o in
                                                         options_of(GenerateOptions).items()]
    # the live outputs come last, so the API's earlier outputs keep their places
    gen_outputs = {"status": gen.status, "audios": gen.audios, "downloads": gen.downloads,
                   "metadata": gen.metadata, "check_take": gen.check_take, "check_result": gen.check_result,
                   "live": gen.live, "live_note": gen.live_note, "play_now": gen.play_now_btn, "hear": gen.hear_take}
    _run_chain(studio, gen.generate_btn, gen.session, partial(generate_h.generate, studio), gen_inputs, gen_outputs, gen_run,
               api_names=gen_api, api_name="generate", **DEVICE_JOB, show_progress="minimal",
               show_progress_on=[gen.status]).then(
        _named(partial(history_h.refresh, studio), history_targets), inputs=hist_list_inputs,
        outputs=_flatten(history_targets), **QUICK)
    _stop_button(gen.stop_btn, gen.session, gen_run)
    _on(gen.play_now_btn.click, generate_h.play_now, [gen.session], {"play_now": gen.play_now_btn}, **QUICK)
    _on(gen.hear_take.select, generate_h.hear_take, [gen.session, gen.hear_take], {"audios": gen.audios,
        "hear": gen.hear_take}, **TOAST)
    _on(gen.check_btn.click, partial(generate_h.check_take, studio),
        [gen.session, gen.check_take, gen.lyrics, *tr_option_list],
        {"check_result": gen.check_result}, **DEVICE_JOB, show_progress="minimal")
    for button in (gen.extend_btn, gen.regen_btn):  # both are done in History, on the picked take
        _on(button.click, partial(generate_h.open_in_history, studio), [gen.session, gen.check_take],
            {"song": hist.song, "tabs": tabs}, **TOAST)

    # ----- History -------------------------------------------------------------------------------
    list_history = partial(history_h.refresh, studio)
    _on(hist.refresh_btn.click, list_history, hist_list_inputs, history_targets, **QUICK)
    # every change of the search text lists again (typed, deleted, pasted, or an input method's
    # insert: .input missed some); milliseconds even for thousands of songs; the last one wins
    _on(hist.search.change, list_history, hist_list_inputs, history_targets, trigger_mode="always_last", **QUICK)
    _on(hist.favourites_only.input, list_history, hist_list_inputs, history_targets, **QUICK)

    def row_clicked(evt: gr.SelectData):  # gradio fills `evt` from the annotation
        return _convert(clicked_targets, user_errors(history_h.clicked)(evt.row_value, evt.index))

    clicked_targets = {"song": hist.song, "continue_status": hist.continue_status}
    hist.table.select(row_clicked, None, _flatten(clicked_targets), **QUICK)
    # Every step on the picked song may find it deleted in another tab or window: it then lists
    # again (history_h.gone), so each takes the search and may set the list.
    picked_targets = {**history_targets, **hist_select_targets}
    _on(hist.song.change, partial(history_h.select, studio), hist_list_inputs, picked_targets, **QUICK)
    _on(hist.save_title_btn.click, partial(history_h.save_title, studio), [hist.song, hist.title, hist.search,
        hist.favourites_only], picked_targets, **TOAST)
    _on(hist.title.submit, partial(history_h.save_title, studio), [hist.song, hist.title, hist.search,
        hist.favourites_only], picked_targets, **TOAST)
    _on(hist.favourite_btn.click, partial(history_h.toggle_favourite, studio), hist_list_inputs, picked_targets,
        **TOAST)
    _on(hist.variants_btn.click, partial(history_h.variants, studio), hist_list_inputs,
        {"family_note": cmp.family_note, "family_table": cmp.family_table, "family_audios": cmp.family_audios,
         "tabs": tabs, **history_targets}, **TOAST)
    _on(hist.delete_btn.click, partial(history_h.ask_delete, studio), hist_list_inputs,
        {"confirm_row": hist.confirm_row, "confirm_text": hist.confirm_text, **history_targets}, **TOAST)
    _on(hist.cancel_btn.click, history_h.cancel_delete, None, {"confirm_row": hist.confirm_row}, **QUICK)
    _on(hist.confirm_btn.click, partial(history_h.delete, studio), hist_list_inputs, picked_targets, **TOAST)
    continue_targets = {**history_targets, "continue_status": hist.continue_status, "search": hist.search,
                        "favourites_only": hist.favourites_only}
    held = {"extend_btn": hist.extend_btn, "regen_btn": hist.regen_btn, "continue_status": hist.continue_status}
    for button, mode, fn, inputs in (
            (hist.extend_btn, "extend", history_h.extend, [hist.song, hist.extend_s, hist.continue_lyrics]),
            (hist.regen_btn, "regenerate", history_h.regenerate,
             [hist.song, hist.regen_at, hist.regen_takes, hist.continue_lyrics])):
        # Both buttons wait while either job runs (and come back however it ended).
        job = _on(button.click, partial(history_h.continue_started, studio, mode), [hist.song], held, **QUICK).then(
            _named(common.line_says_why(partial(fn, studio), "continue_status"), continue_targets), inputs=inputs,
            outputs=_flatten(continue_targets),
            api_name=mode, api_visibility="public", **DEVICE_JOB, show_progress="minimal",
            show_progress_on=[hist.continue_status])
        ended = dict(fn=_named(history_h.continue_ended, held), inputs=[hist.continue_status], outputs=_flatten(held),
                     **QUICK)
        job.then(**ended)
        job.failure(**ended)
    _on(hist.reuse_btn.click, partial(history_h.reuse, studio),
        [hist.song, hist.reuse_seed, hist.search, hist.favourites_only],
        {"lyrics": gen.lyrics, "tags": gen.tags, "options": gen_option_list, "tabs": tabs, **history_targets},
        **TOAST)

    # ----- Transcribe ----------------------------------------------------------------------------
    tr_run = {"run_btn": tr.run_btn, "stop_btn": tr.stop_btn, "status": tr.speed}
    tr_outputs = {"text": tr.text, "segments": tr.segments, "downloads": tr.downloads, "speed": tr.speed}
    _on(tr.preset.select, transcribe_h.preset_settings, [tr.preset], {"options": tr_option_list}, **QUICK)
    tr_api = ["session", "audio"] + [shown_name(n, o) for n, o in options_of(TranscribeOptions).items()]
    _run_chain(studio, tr.run_btn, tr.session, partial(transcribe_h.transcribe, studio), [tr.session, tr.audio, *tr_option_list],
               tr_outputs, tr_run, api_names=tr_api, api_name="transcribe", **DEVICE_JOB,
               show_progress="minimal", show_progress_on=[tr.speed])
    _stop_button(tr.stop_btn, tr.session, tr_run)

    # ----- Compare -------------------------------------------------------------------------------
    cmp_run = {"run_btn": cmp.run_btn, "stop_btn": cmp.stop_btn, "status": cmp.status}
    cmp_outputs = {"status": cmp.status, "table": cmp.table, "audios": cmp.audios}
    _run_chain(studio, cmp.run_btn, cmp.session, partial(compare_h.compare, studio),
               [cmp.session, cmp.presets, cmp.lyrics, cmp.tags, cmp.length, cmp.seed], cmp_outputs, cmp_run,
               api_name="compare", **DEVICE_JOB, show_progress="minimal", show_progress_on=[cmp.status])
    _stop_button(cmp.stop_btn, cmp.session, cmp_run)

    # ----- Settings ------------------------------------------------------------------------------
    status_target = {"engine_status": st.engine_status}
    _on(st.scan_btn.click, partial(settings_h.scan_folder, studio=studio), [st.model_path, st.version],
        {"found": st.found, "version": st.version}, **QUICK)
    _on(st.load_btn.click, partial(settings_h.load, studio),
        [st.model_path, st.version, st.device, st.dtype, st.lazy_load, st.codec_device, st.quant],
        {**status_target, "quant_note": st.quant_note}, concurrency_id=MODELS, show_progress="minimal")
    _on(st.quant.input, partial(settings_h.weights_changed, studio), [st.quant], {"quant_note": st.quant_note},
        **QUICK)
    _on(st.unload_btn.click, partial(settings_h.unload, studio), None, status_target, concurrency_id=MODELS)
    _on(st.doctor_btn.click, partial(settings_h.doctor, studio), None, {"doctor": st.doctor},
        **DEVICE_JOB)
    field_names = settings_h.PRESET_FIELDS
    preset_fields = [st.fields[name] for name in field_names]
    settings_preset_targets = {**st.fields, "description": st.description, "delete_btn": st.delete_btn,
                               "preset_note": st.preset_note}
    # Settings holds the defaults: a preset picked there, or one control moved, sets the
    # Generate and Transcribe tabs' controls too, so it applies to the next run.
    run_controls = {**gen.options, **tr.options}
    # A preset set by the page itself (first paint, save, delete) fills Settings only: the run
    # controls already hold those values, and a late push would overwrite what the musician
    # typed meanwhile. One the musician picks also sets the run controls.
    _on(st.preset.change, settings_h.preset_values, [st.preset], settings_preset_targets, **QUICK)
    _on(st.preset.select, settings_h.preset_values, [st.preset], settings_preset_targets, **QUICK).then(
        None, inputs=preset_fields, outputs=[run_controls[n] for n in field_names], js="(...values) => values",
        **QUICK)
    # Only a preset the musician picks sets the weights choice: one the page sets (first paint,
    # save, delete) leaves what was chosen there.
    _on(st.preset.select, partial(common.preset_weights, studio), [st.preset], weights_targets, **QUICK)
    _on(st.preset.select, partial(generate_h.follow_settings_preset, studio), [st.preset],
        {"preset": gen.preset, "preset_info": gen.preset_info}, **QUICK)
    # and one picked on Generate is named on Settings, which shows its values (st.preset.change
    # fills Settings' fields only: the run controls already hold them)
    _on(gen.preset.select, lambda name: {"preset": gr.update(value=name)}, [gen.preset], {"preset": st.preset},
        **QUICK)
    # A preset the musician picks on Generate or Settings is the run's defaults for Transcribe too, as
    # Settings says (Settings' own pick copies its fields there; Generate's sets them from the preset)
    _on(gen.preset.select, lambda name: {"preset": gr.update(value=name), **transcribe_h.preset_settings(name)},
        [gen.preset], {"preset": tr.preset, "options": tr_option_list}, **QUICK)
    _on(st.preset.select, lambda name: {"preset": gr.update(value=name)}, [st.preset], {"preset": tr.preset},
        **QUICK)
    # Copied by the page itself, keystroke by keystroke in order: through the server each
    # keystroke's copy was a request of its own, and answers that came back out of order left a
    # prefix of what was typed (45 → 4) on the run controls.
    for name in field_names:
        st.fields[name].input(None, inputs=[st.fields[name]], outputs=[run_controls[name]], js="(value) => value",
                              **QUICK)
        # every field is read: the answer is the whole form's, whichever change it follows
        _on(st.fields[name].change, settings_h.values_problems, preset_fields, {"values_note": st.values_note},
            trigger_mode="always_last", **QUICK)
    _on(st.save_btn.click, partial(settings_h.save, studio), [st.new_name, st.description, *preset_fields, st.quant],
        {**preset_targets, "preset_note": st.preset_note}, **TOAST)
    _on(st.delete_btn.click, partial(settings_h.delete, studio), [st.preset, gen.preset, tr.preset, cmp.presets],
        {**preset_targets, "preset_note": st.preset_note, "generate_preset_info": gen.preset_info,
         "generate_options": gen_option_list}, **TOAST)
    _on(st.timer.tick, partial(settings_h.live, studio), None, {"live": st.live, "engine_status": st.engine_status},
        **QUICK)

    # ----- first paint ---------------------------------------------------------------------------
    def first_paint():
        out = settings_h.dropdowns(None)
        out["settings_preset"] = gr.update(choices=out["settings_preset"]["choices"], value=DEFAULT_PRESET)
        out["generate_preset"] = generate_h.preset_names(generate_h.DEFAULT_PRESET)
        out["transcribe_preset"] = gr.update(choices=out["transcribe_preset"]["choices"], value=None)
        out.update({f"gen_{k}": v for k, v in generate_h.apply_preset(generate_h.DEFAULT_PRESET).items()})
        out.update(history_h.refresh(studio))
        out.update({f"set_{k}": v for k, v in settings_h.preset_values(out["settings_preset"]["value"]).items()})
        out.update(settings_h.engine_controls(studio))  # as loaded now, not as the studio started
        out.update(settings_h.live(studio))
        out["gen_status"] = generate_h.page_status(studio)  # a song left by a reloaded page, say
        out["gen_page_timer"] = gr.update(active=out["gen_status"] == generate_h.FINISHING)
        return out

    engine_control_targets = {"model_path": st.model_path, "version": st.version, "device": st.device,
                              "codec_device": st.codec_device, "dtype": st.dtype, "quant": st.quant,
                              "lazy_load": st.lazy_load}
    _on(demo.load, first_paint, None,
        {**preset_targets, **{f"gen_{k}": v for k, v in gen_controls.items()}, **history_targets,
         **{f"set_{k}": v for k, v in settings_preset_targets.items()}, **engine_control_targets,
         "engine_status": st.engine_status, "live": st.live, "gen_status": gen.status,
         "gen_page_timer": gen.page_timer}, queue=False, api_visibility="undocumented")
    _on(gen.page_timer.tick, partial(generate_h.page_status_again, studio), [gen.status],
        {"status": gen.status, "page_timer": gen.page_timer}, **QUICK)
