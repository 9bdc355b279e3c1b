"""`Studio`: the process-wide objects every handler needs, built once by `build_ui` and passed
to handlers with functools.partial (never a module global).

The engine can be replaced from the Settings tab (another model folder, device or precision);
handlers read `studio.engine` at call time, so they always use the current one.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
import tempfile

from heartmula import Engine, History, LiveStats, Transcriber, prune_tree

TEMP_MAX_AGE_S = 24 * 3600  # transcripts, compare renders and other previews are removed after a day


@dataclass(eq=False)  # a turn is itself, whatever it is doing: the line finds and removes it by identity
class Turn:
    """One job's place in `Turns`: `what` it is doing, as another job's waiting line names it."""
    turns: "Turns"
    what: str
    handed_off: bool = False  # the job goes on without its page (see hand_off)

    def hand_off(self, finish: Callable[[], None]) -> None:
        """The job's page went away but its work goes on: run `finish` on a thread of its own and
        end this turn when it returns, not when the page's handler ends."""
        self.handed_off = True

        def run() -> None:
            try:
                finish()
            finally:
                self.turns._leave(self)

        threading.Thread(target=run, name="heartmula-finish", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until this job may use the device; False if `timeout` seconds passed first."""
        return self.turns._wait(self, timeout)

    def ahead(self) -> list[str]:
        """What the jobs before this one are doing, the running one first ([] once it is this one's turn)."""
        return self.turns._ahead(self)


class Turns:
    """One device job at a time, in the order they asked. gradio's queue could hold them (one
    concurrency id, limit 1), but a job held there cannot be stopped: none of our code runs until
    its turn, so a Stop reached nothing and the page said "Stopping…" until the other job ended.
    Here the job's own handler waits, and can watch its Stop flag while it does."""

    def __init__(self):
        self._cv = threading.Condition()
        self._line: list[Turn] = []  # the first one uses the device; the rest wait, in order

    @contextmanager
    def take(self, what: str) -> Iterator[Turn]:
        """A place in line, left however the job ends (done, failed, stopped, or its page gone)."""
        turn = Turn(self, what)
        with self._cv:
            self._line.append(turn)
        try:
            yield turn
        finally:
            if not turn.handed_off:
                self._leave(turn)

    def _leave(self, turn: Turn) -> None:
        with self._cv:
            self._line.remove(turn)
            self._cv.notify_all()

    @property
    def busy(self) -> bool:
        """A job uses the device or waits for it."""
        return bool(self._line)

    @property
    def finishing(self) -> bool:
        """A job whose page went away is being finished (`Turn.hand_off`)."""
        with self._cv:
            return any(t.handed_off for t in self._line)

    def _wait(self, turn: Turn, timeout: float | None) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self._line[0] is turn, timeout=timeout)

    def _ahead(self, turn: Turn) -> list[str]:
        with self._cv:
            return [t.what for t in self._line[:self._line.index(turn)]]


@dataclass
class Studio:
    engine: Engine
    history: History
    stats: LiveStats = field(default_factory=LiveStats)
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "heartmula-studio")
    demo: bool = False  # the engine runs the demo weights (they make noise)
    # Model folders the Settings tab may open (remote users must not point the studio at any
    # folder of the server). Empty: the folder holding the model the studio started with.
    model_roots: tuple[Path, ...] = ()
    # Songs being extended or regenerated from now (id -> what the job is doing): they stay
    # until the job ends, or the new song would name a parent that is gone.
    continuing: dict[str, str] = field(default_factory=dict)
    # Warm each engine (the first, and any a Load makes) in the background: app.py turns it on
    # unless --no-warmup. `warm_thread`: the last warm-up started.
    warm: bool = False
    warm_thread: threading.Thread | None = None
    _transcriber: Transcriber | None = None
    _transcriber_root: str | None = None  # the model folder _transcriber was made for
    # Device jobs (songs, comparisons, transcriptions) wait here for each other, not in gradio's queue.
    turns: Turns = field(default_factory=Turns)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        roots = self.model_roots or (Path(self.engine.config.model_path).expanduser().resolve().parent,)
        self.model_roots = tuple(Path(r).expanduser().resolve() for r in roots)

    def check_model_folder(self, model_path: str) -> Path:
        """The folder, resolved (symlinks and '..' followed), if it lies inside an allowed root."""
        text = str(model_path or "").strip()
        if not text:
            raise ValueError("enter the model folder (the one holding HeartMuLa-oss-<version>/)")
        folder = Path(text).expanduser().resolve()
        if not any(folder == root or root in folder.parents for root in self.model_roots):
            allowed = ", ".join(f"`{r}`" for r in self.model_roots)
            raise ValueError(f"model folders must be inside {allowed} (start the studio with "
                             f"--allowed-model-root to allow another)")
        return folder

    def transcriber(self) -> Transcriber:
        """The transcriber for the current model folder, created on first use."""
        with self._lock:
            root = self.engine.config.model_path
            if self._transcriber is None or self._transcriber_root != root:
                if self._transcriber is not None:
                    self._transcriber.unload()
                self._transcriber = Transcriber(model_path=root, device=self.engine.config.device)
                self._transcriber_root = root
            return self._transcriber

    def unload_transcriber(self) -> None:
        """Free the transcriber's model (it loads again on its next use)."""
        with self._lock:
            if self._transcriber is not None:
                self._transcriber.unload()

    @property
    def transcriber_loaded(self) -> bool:
        return self._transcriber is not None and self._transcriber.loaded

    def replace_engine(self, engine: Engine) -> None:
        with self._lock:
            old, self.engine = self.engine, engine
        if old is not engine:
            old.unload()  # its warm-up, if one runs, gives way and ends
            self.warm_in_background(engine)

    def warm_in_background(self, engine: Engine) -> None:
        """Compile and capture the request shapes the studio is likely to be asked for, most
        likely first, so that a first request of each costs what it costs in steady state. A
        real request stops the warm step within a frame and goes first; the shape is warmed
        after it. It ends when the engine is replaced or unloaded. Not under lazy load (the
        models are freed after every song, and what was warmed with them)."""
        if not self.warm or engine.config.lazy_load:
            return
        import logging
        import time

        from heartmula import DEFAULT_PRESET, likely_shapes, load_presets, shape_of

        log = logging.getLogger("heartmula.studio")

        def warm():
            t = time.perf_counter()
            try:
                shapes = likely_shapes(load_presets()[0], DEFAULT_PRESET)
                warmed = engine.warm_shapes(
                    shapes, should_stop=lambda: self.engine is not engine,
                    on_warmed=lambda opts, s: log.info("warmed %s in %.1f s", shape_of(opts), s))
                log.info("warm-up done in %.1f s (%d of %d request shapes)", time.perf_counter() - t, len(warmed),
                         len(shapes))
            except Exception:  # a failed warm-up only costs a first request its speed
                log.exception("warm-up failed; a first request will compile and capture instead")

        self.warm_thread = threading.Thread(target=warm, name="heartmula-warmup", daemon=True)
        self.warm_thread.start()

    def temp_path(self, name: str) -> Path:
        """A fresh path for a temporary file named `name`; old temporaries are pruned at every
        depth (each file lives in a folder of its own, so pruning only the top level kept them all)."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        prune_tree(self.temp_dir, TEMP_MAX_AGE_S)
        folder = self.temp_dir / secrets.token_hex(6)
        folder.mkdir()
        return folder / name
