"""Per-session state (one per browser tab), held in a gr.State: small plain data only."""

from __future__ import annotations

import threading


class Session:
    """The cancel Event read by running jobs, and what the last generation produced."""

    def __init__(self):
        self.cancel = threading.Event()  # set by a Stop button, cleared when a job is started
        self.last_song_ids: list[str] = []  # History ids of the last generation's takes
        self.last_lyrics: str = ""
        self.stop_at: float | None = None  # time.monotonic() of the last Stop
        self.play_now = threading.Event()  # "Play what is ready": start take 1 without waiting
        self.live_files: dict[int, str] = {}  # take index -> its audio so far (or its file, once done)
        self.turn = None  # the running job's place in Studio.turns (ui.studio.Turn)

    def __deepcopy__(self, memo):
        # gr.State deep-copies its initial value for each new session; an Event cannot be
        # copied, and every session must get its own anyway.
        return Session()
