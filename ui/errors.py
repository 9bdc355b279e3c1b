"""`@user_errors`: the one place where exceptions become what the user sees.

- ValueError (bad input; the message is written for the user) -> gr.Error(message), logged as one
  line at INFO (a user's mistake is not a fault of the server); so is a gr.Error a handler raises
- RuntimeError (setup problems: missing weights, out of memory; user-facing messages) -> gr.Error(message),
  logged with its traceback
- GenerationCancelled / TranscriptionCancelled / StoppedWaiting -> gr.Info ("Stopped ...") and the handler
  ends quietly
- OSError (disk full, permissions) -> gr.Error naming the file and the reason, logged
- anything else -> logged with its traceback, gr.Error("Internal error: see server log")

Works on plain functions and on generator functions (long jobs that yield progress). Gradio
prints the traceback of every gr.Error it sees unless told not to; ours say `print_exception=False`,
so the log holds only what is logged here.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
from pathlib import Path

import gradio as gr

from heartmula import GenerationCancelled, TranscriptionCancelled

log = logging.getLogger("heartmula.studio")
INTERNAL = "Internal error: see server log"


class StoppedWaiting(Exception):
    """Stop was pressed while the job waited for another job to free the device: it never started."""


def plain(text: str) -> str:
    """A message as text: the page renders toasts as HTML, and messages quote what the user
    typed (a title, a preset name, a seed), which must show as written, never as markup."""
    return html.escape(str(text), quote=False)


def info(message: str) -> None:
    gr.Info(plain(message))


def warning(message: str) -> None:
    gr.Warning(plain(message))


def _error(message: str) -> gr.Error:
    return gr.Error(plain(message), print_exception=False)  # logged here already, as much as it deserves


def _translate(e: BaseException) -> BaseException | None:
    """The exception to raise instead (None: a stop, already reported)."""
    if isinstance(e, gr.Error):  # raised by a handler: its message is already what the page shows
        log.info("refused: %s", e.message)
        e.print_exception = False
        return e
    if isinstance(e, (GenerationCancelled, TranscriptionCancelled, StoppedWaiting)):
        log.info("stopped: %s", e)
        info(f"Stopped: {e}" if str(e) else "Stopped")
        return None
    if isinstance(e, ValueError):
        log.info("refused: %s", e)
        return _error(str(e))
    if isinstance(e, RuntimeError):
        log.error("job failed: %s", e, exc_info=e)
        return _error(str(e))
    if isinstance(e, OSError):  # a full disk, a lost mount, a permission: say which
        log.error("file error: %s", e, exc_info=e)
        name = f" ({Path(e.filename).name})" if isinstance(e.filename, str) else ""
        return _error(f"could not read or write a file{name}: {e.strerror or e}")
    log.error("internal error", exc_info=e)
    return _error(INTERNAL)


def user_errors(fn):
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                err = _translate(e)
                if err is not None:
                    raise err from e

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            err = _translate(e)
            if err is not None:
                raise err from e
            return {}  # a stop: nothing to update

    return wrapper
