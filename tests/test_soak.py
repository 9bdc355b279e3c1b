"""Long-running checks, marked so they can be picked or skipped (`-m soak`, `-m many_users`):

- soak: 50 demo generations in one process, each saved to History, with RSS, device memory
  and open files bounded after a warm-up (< 1 minute on 2 CPU cores).
- many_users: five gradio_client clients submitting at once to a running app.py; every job
  finishes, in the order submitted, one at a time on the device, none lost.
"""

from __future__ import annotations

import os
import time

import pytest

from heartmula import GenerateOptions, History, load_engine
from heartmula.demo import ensure_demo_bundle

# Growth allowed between generation 10 and generation 50. Steady state on CPU allocates and frees
# the same buffers every song; glibc keeps some freed pages, so a few MB of drift is normal. A leak
# of one 1 s song per job (2 x 48000 float32 = 384 KB audio, plus frames and tensors) would add
# > 15 MB over 40 jobs; anything holding the KV caches or a model copy per job would add far more.
RSS_GROWTH_LIMIT_MB = 24
DEVICE_GROWTH_LIMIT_MB = 8  # accelerators: allocated bytes after each job return to the same level
N_SONGS, WARMUP = 50, 10


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.soak
def test_fifty_generations_do_not_grow_memory(tmp_path):
    import gc

    engine = load_engine(str(ensure_demo_bundle()), version="demo", device="cpu")
    history = History(tmp_path / "outputs", formats=("wav",))
    opts = GenerateOptions(max_audio_length_ms=1000, codec_steps=2)
    rss, device, fds = [], [], []
    started = time.monotonic()
    for i in range(N_SONGS):
        result = engine.generate(f"la la la {i}", "pop", opts)
        history.save(result)
        del result
        gc.collect()
        rss.append(_rss_mb())
        device.append(sum(m["allocated"] for m in engine.memory().values()) / 2**20)
        fds.append(len(os.listdir("/proc/self/fd")))
    elapsed = time.monotonic() - started
    assert len(history.list()) == N_SONGS
    growth = max(rss[WARMUP:]) - rss[WARMUP]
    print(f"\nsoak: {N_SONGS} songs in {elapsed:.1f} s; RSS {rss[0]:.0f} -> {rss[WARMUP]:.0f} (after warm-up) "
          f"-> {rss[-1]:.0f} MB, peak growth {growth:.1f} MB; device {device[WARMUP]:.1f} -> {device[-1]:.1f} MB; "
          f"open files {fds[WARMUP]} -> {fds[-1]}")
    assert growth < RSS_GROWTH_LIMIT_MB, f"RSS grew {growth:.1f} MB over {N_SONGS - WARMUP} songs: {rss}"
    assert max(device[WARMUP:]) - device[WARMUP] < DEVICE_GROWTH_LIMIT_MB
    assert fds[-1] <= fds[WARMUP]  # no file handle left open per song


@pytest.mark.many_users
@pytest.mark.browser  # needs the running app (conftest's studio_app), like the browser tests
def test_five_clients_at_once_all_finish_in_order_one_at_a_time(studio_app):
    import json

    gradio_client = pytest.importorskip("gradio_client")
    before = set(studio_app.sidecars())
    clients = [gradio_client.Client(studio_app.url, verbose=False) for _ in range(5)]
    jobs = []
    from gradio_client.utils import Status

    for i, client in enumerate(clients):  # each joins the queue before the next is sent: queue order = submit order
        job = client.submit(lyrics="[verse]\nhello world\n", tags=f"user {i}", max_audio_length_s=1,
                            seed=str(1000 + i), ignore_eos=True, codec_steps=2, api_name="/generate")
        deadline = time.monotonic() + 60
        while job.status().code in (Status.STARTING, Status.JOINING_QUEUE) and time.monotonic() < deadline:
            time.sleep(0.05)  # the poll's interval while waiting for the job's state to change
        jobs.append(job)
    results = [job.result(timeout=300) for job in jobs]
    for i, out in enumerate(results):
        assert "1 take(s)" in out[0] and f"seed {1000 + i}" in out[0], out[0]
    new = [json.loads(p.read_text()) for p in set(studio_app.sidecars()) - before]
    assert sorted(m["seed"] for m in new) == [1000 + i for i in range(5)]  # none lost, none doubled
    runs = sorted((m["job_started_unix_s"], m["saved_unix_s"], m["seed"]) for m in new)
    assert [seed for _, _, seed in runs] == [1000 + i for i in range(5)]  # started in the order submitted
    for (_, saved, _), (start, _, _) in zip(runs, runs[1:]):
        assert saved <= start + 0.01, f"two jobs on the device at once: {runs}"
