"""Helpers shared by the handlers: running an engine job on a worker thread, formatting."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Iterator

from heartmula import load_presets

from ..errors import StoppedWaiting

log = logging.getLogger("heartmula.studio")
HEARTBEAT_S = 0.5  # the UI hears from a running job at least this often


def follow(job: Iterator, status: Callable) -> Iterator:
    """Yield status(item) for each item a `run_job` yields; return the job's result
    (`result = yield from follow(job, ...)` in a handler)."""
    while True:
        try:
            item = next(job)
        except StopIteration as done:
            return done.value
        yield status(item)


class JobLeftRunning(Exception):
    """Stop was pressed and the job had not ended `stop_grace_s` later (see run_job)."""


STOP_POLL_S = 0.05  # how often a job with a stop grace looks at the Stop flag


def run_job(fn: Callable, cancel: threading.Event, on_progress: Callable | None = None, *,
            stream: bool = False, stop_grace_s: float | None = None,
            on_leave: Callable[[Callable[[], object]], None] | None = None) -> Iterator:
    """Run fn(on_progress=..., should_stop=...) on a worker thread.

    Yields each Progress the job reports (and None as a heartbeat every HEARTBEAT_S), then
    returns fn's result (`result = yield from run_job(...)`); fn's exception is re-raised here.
    If the consumer goes away (the browser tab closed or reloaded), the job is told to stop,
    unless `on_leave` is given.

    `stream`: fn returns an iterator; its items are yielded as they come, and its last item is
    the result. `stop_grace_s`: once Stop is pressed, wait at most this long for the job to end,
    then raise JobLeftRunning and leave it to finish on its own (a codec window being decoded
    cannot be cut short; what it makes is dropped). `on_leave`: if the consumer goes away, the
    job goes on instead, and on_leave gets a function that waits for it and returns its result
    (or raises its exception), to call from a thread of its own.
    """
    events: queue.Queue = queue.Queue()
    box: dict = {}
    gone = threading.Event()  # the consumer left: nobody reads `events` any more

    def put(item) -> None:
        if not gone.is_set():
            events.put(item)

    def forward(p) -> None:
        if on_progress is not None:
            on_progress(p)
        put(p)

    def work() -> None:
        try:
            out = fn(on_progress=forward, should_stop=cancel.is_set)
            if stream:
                last = _DONE
                for item in out:
                    if last is not _DONE:
                        put(last)
                    last = item
                out = None if last is _DONE else last
            box["result"] = out
        except BaseException as e:  # handed to the consumer's thread
            box["error"] = e
        finally:
            events.put(_DONE)

    def outcome(_=None):
        if "error" in box:
            raise box["error"]
        return box["result"]

    worker = threading.Thread(target=work, name="heartmula-job", daemon=True)
    worker.start()
    left_running, ended, stop_seen, last_yield = False, False, None, time.monotonic()
    try:
        while True:
            timeout = HEARTBEAT_S
            if stop_grace_s is not None:
                if cancel.is_set():
                    stop_seen = stop_seen or time.monotonic()
                    if time.monotonic() - stop_seen > stop_grace_s:
                        left_running = True
                        raise JobLeftRunning("the codec's last window finishes in the background")
                timeout = STOP_POLL_S
            try:
                item = events.get(timeout=timeout)
            except queue.Empty:
                if time.monotonic() - last_yield >= HEARTBEAT_S:
                    last_yield = time.monotonic()
                    yield None
                continue
            if item is _DONE:
                ended = True
                break
            last_yield = time.monotonic()
            yield item
    finally:
        if not ended and not left_running:  # the consumer closed early: the page went away
            gone.set()
            if on_leave is not None:  # (also when the job had just ended: its result is not lost)
                on_leave(lambda: outcome(worker.join()))
            elif worker.is_alive():  # end the job rather than let it run on
                log.info("stopped: the page went away (closed or reloaded) during a job; the job was ended, "
                         "nothing of it saved")
                cancel.set()
                worker.join()
    return outcome()


_DONE = object()


def wait_turn(turn, cancel: threading.Event | None, key: str) -> Iterator[dict]:
    """Yield {key: a line saying what the job waits for} until it is `turn`'s turn on the device.
    Raises StoppedWaiting if `cancel` is set first (or as the turn comes: the job never began)."""
    started = last = time.monotonic()
    if not turn.wait(0):
        yield {key: waiting_text(turn.ahead(), started)}
    while not turn.wait(STOP_POLL_S):  # the poll is for Stop; the turn itself wakes the wait at once
        if cancel is not None and cancel.is_set():
            raise StoppedWaiting("before it started; nothing was made")
        if time.monotonic() - last >= HEARTBEAT_S:
            last = time.monotonic()
            yield {key: waiting_text(turn.ahead(), started)}
    if cancel is not None and cancel.is_set():
        raise StoppedWaiting("before it started; nothing was made")


def waiting_text(ahead: list[str], started: float) -> str:
    """'⏳ Waiting for another song to finish…' and how many more wait before this job."""
    if not ahead:  # the turn came between two looks
        return "⏳ Starting…"
    more = f" ({len(ahead) - 1} more job{'s' if len(ahead) > 2 else ''} before this one)" if len(ahead) > 1 else ""
    return (f"⏳ Waiting for {ahead[0]} to finish{more}: this one starts when it ends (Stop cancels it) · "
            f"elapsed {fmt_s(time.monotonic() - started)}")


def takes_turn(what: str, key: str, stoppable: bool = True, check: Callable | None = None):
    """Decorate a job generator fn(studio, session, ...): it first waits for the device behind the
    jobs before it (Studio.turns), saying so in `key`, and holds the device until it ends. `what`:
    what it does, as the waiting line of a job after it names it ("another song"). `stoppable`:
    the session's Stop flag ends the wait (a job with no Stop button of its own must not see
    another job's). `check(studio, *args)`: raises ValueError for a request that would be refused,
    before any waiting (a bad value is not learnt minutes later, when the other job ends)."""
    import functools

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(studio, session, *args):
            if check is not None:
                check(studio, *args)
            with studio.turns.take(what) as turn:
                session.turn = turn  # a job that goes on after its page left hands it off (Turn.hand_off)
                yield from wait_turn(turn, session.cancel if stoppable else None, key)
                return (yield from fn(studio, session, *args))

        return wrapper

    return deco


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d} min"


def fmt_bytes(n: int | None) -> str:
    if not n:
        return "0 B" if n == 0 else "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def weights_text(quant: str | None) -> str:
    """The language model's weights as the page names them (int8 stays labelled experimental
    until it has been checked on the real checkpoint; docs/performance.md)."""
    return {"int8": "int8 (experimental)", "none": "not quantized"}.get(quant, "not recorded")


def song_resources(quant: str | None, peak_memory_bytes: int | None, device: str | None) -> str:
    """What a song ran with, for its result line and History: 'weights int8 (experimental) ·
    peak memory 6.00 GiB on cuda:0'. A device that reports no peak (the CPU) says so."""
    peak = fmt_bytes(peak_memory_bytes) if peak_memory_bytes else "not reported"
    return f"weights {weights_text(quant)} · peak memory {peak}" + (f" on {device}" if device else "")


def weights_note(studio, quant: str, preset: str | None = None) -> str:
    """'' when `quant` is what the engine is set up with; else that the Load button applies it.
    Loading is the musician's call (several GB, tens of seconds): nothing reloads by itself."""
    have = studio.engine.config.quant
    if quant == have:
        return ""
    who = f"Preset **{preset}** asks for" if preset else "You chose"
    return (f"⚠️ {who} **{weights_text(quant)}** weights, and the studio's language model is "
            f"**{weights_text(have)}**: press **Load** to reload it with them (nothing reloads by itself). "
            f"Until then, songs are made as now.")


def preset_weights(studio, name: str | None) -> dict:
    """A preset the musician picked (on Settings or Generate): one that names `quant` sets the
    Settings weights choice, with a note when the engine is set up otherwise (Load applies it;
    nothing reloads by itself). One that names none leaves the choice and its note as they are."""
    presets, _ = load_presets()
    if name not in presets:
        raise ValueError(f"no preset named {name!r}; pick one from the list")
    quant = presets[name].quant
    if quant is None:
        return {}
    return {"quant": quant, "quant_note": weights_note(studio, quant, preset=name)}


def bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / total) if total else 0
    return "█" * filled + "░" * (width - filled)


PHASES = ("prompt", "frames", "decode", "saving")  # a generation's steps, in the order they run


def progress_text(p, started: float) -> str:
    """One readable line for a heartmula Progress (or None: just the elapsed time)."""
    elapsed = time.monotonic() - started
    if p is None:
        return f"⏳ Starting… elapsed {fmt_s(elapsed)}"
    if p.phase == "prompt":
        return f"⏳ Reading the prompt… elapsed {fmt_s(elapsed)}"
    if p.phase == "frames":
        rate = f"{p.per_s:.1f} frames/s" if p.per_s else "– frames/s"
        return (f"🎼 Generating frames {bar(p.done, p.total)} **{p.done} / {p.total}** · {rate} · "
                f"elapsed {fmt_s(elapsed)} · ETA {fmt_s(p.eta_s)}")
    if p.phase == "decode":
        return (f"🔊 Decoding audio {bar(p.done, p.total)} **{p.done} / {p.total}** windows · "
                f"elapsed {fmt_s(elapsed)} · ETA {fmt_s(p.eta_s)}")
    if p.phase == "saving":
        return f"💾 Saving to History… elapsed {fmt_s(elapsed)}"
    return f"⏳ {p.phase} {p.done} / {p.total} · elapsed {fmt_s(elapsed)}"


class ProgressLine:
    """The one status line of a running generation. It only moves forward (prompt -> frames ->
    decoding -> saving, and never back to a smaller count); a heartbeat (None) repeats the last
    step with a fresh elapsed time, so the line never flickers back to "Starting"."""

    def __init__(self, started: float | None = None, waiting: str | None = None):
        self.started = time.monotonic() if started is None else started
        self.last = None
        self.waiting = waiting  # what the line says before the first step, instead of "Starting"

    @staticmethod
    def _rank(p) -> tuple:
        return (PHASES.index(p.phase) if p.phase in PHASES else -1, p.done)

    def __call__(self, p) -> str:
        if p is not None and (self.last is None or self._rank(p) >= self._rank(self.last)):
            self.last = p
        if self.last is None and self.waiting:
            return f"{self.waiting} elapsed {fmt_s(time.monotonic() - self.started)}"
        return progress_text(self.last, self.started)

    def saving(self) -> str:
        self.last = _Step("saving")
        return progress_text(self.last, self.started)


class _Step:
    """A step with no counts (saving), shaped like a heartmula Progress."""

    def __init__(self, phase: str):
        self.phase, self.done, self.total, self.eta_s = phase, 0, 0, None


STOPPING = "⏹ Stopping"
STOPPED_WAITING = "⏹ Stopped before it started — nothing was made."
# Stop's "Stopping…" is written by the page itself as the click happens (wiring.STOP_JS), not by
# the server: an answer from outside the queue can reach a slow page after the job's own last
# status and overwrite it, which left "⏹ Stopping…" on screen for good.


# ----- the Run / Stop pair every long job has (keys: run_btn, stop_btn, status) -----------------
def start(session, studio=None) -> dict:
    """Before a job is queued (outside the queue): a fresh Stop flag, swap the buttons. Fresh, not
    cleared: a stopped job may still be finishing its last codec window in the background, and
    it must keep seeing its own Stop (cleared, it would decode the rest of its song first)."""
    session.cancel = threading.Event()
    # another page's job (running or waiting), or this one's stopped job finishing its last window
    busy = studio is not None and (studio.turns.busy or studio.engine.busy)
    return {"run_btn": _update(interactive=False), "stop_btn": _update(interactive=True),
            "status": "⏳ Waiting for the engine: another job is running, and this one starts when it ends…"
            if busy else "⏳ Waiting for the engine…"}


def stop(session) -> dict:
    """Stop button (outside the queue): the running job sees the flag within a few frames, a job
    waiting for the device within STOP_POLL_S. The status line is the page's to change (see
    STOPPING) and the job's."""
    session.stop_at = time.monotonic()  # a job can say how soon after this it ended
    session.cancel.set()
    return {"stop_btn": _update(interactive=False)}


def finish(status: str | None = None) -> dict:
    """After a job, however it ended (done, failed, stopped, refused): back to idle. A status
    still saying "Stopping" (Stop pressed as the job ended) says it stopped."""
    out = {"run_btn": _update(interactive=True), "stop_btn": _update(interactive=False)}
    if str(status or "").startswith(STOPPING):
        out["status"] = "⏹ Stopped."
    return out


def _update(**kwargs):
    import gradio as gr

    return gr.update(**kwargs)


def reports_end(key: str, stopped: str = "⏹ Stopped. Nothing was saved."):
    """Decorate a job generator so its status line says how it ended when it fails or is stopped
    (the exception still goes on to `user_errors`, which shows the message). `stopped`: the line
    after a Stop."""
    import functools

    from heartmula import GenerationCancelled, TranscriptionCancelled

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return (yield from fn(*args, **kwargs))
            except StoppedWaiting:
                yield {key: STOPPED_WAITING}
                raise
            except (GenerationCancelled, TranscriptionCancelled):
                yield {key: stopped}
                raise
            except (ValueError, RuntimeError) as e:
                yield {key: f"❌ Not done: {e}"}
                raise
            except Exception:
                yield {key: "❌ Not done: internal error (see the server log)"}
                raise

        return wrapper

    return deco


def line_says_why(fn: Callable, key: str) -> Callable:
    """A plain handler as a one-answer generator whose refusal or failure is also written on `key`'s
    status line, not only in a pop-up (the page stacks pop-ups, stale ones first). The exception
    still goes on to `user_errors` for the pop-up and API callers."""
    import functools
    import inspect

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            yield fn(*args, **kwargs)
        except (ValueError, RuntimeError) as e:  # user-facing messages (see ui/errors.py)
            yield {key: f"❌ Not done: {e}"}
            raise

    wrapper.__signature__ = inspect.signature(fn)
    return wrapper


JS_SAFE_INT = 2**53  # integers past this lose digits in the browser's JSON (a float64)


def exact_for_browser(value):
    """A JSON value the browser shows exactly: integers past 2**53 (seeds go up to 2**63 - 1)
    become their decimal text; everything else is unchanged."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) >= JS_SAFE_INT:
        return str(value)
    if isinstance(value, dict):
        return {k: exact_for_browser(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [exact_for_browser(v) for v in value]
    return value
