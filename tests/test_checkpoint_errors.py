"""Checkpoint files the user cannot read (issue 17): the error says "permission denied" and names
the file, never "No such file or directory ... download it again".

The tests run as root on the development machine, where chmod 000 does not stop reads: root
reads anything through the capabilities CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. So the load
runs in a child process that, when root, drops those two from its capability bounding set before
exec (prctl PR_CAPBSET_DROP), after which the mode bits bind root as they bind a user. (Switching
to `nobody` is no good: the interpreter lives under /root, 0700.) As any other user the child
simply runs as that user. Either way the real open() of the real loading code meets a real EACCES.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>, <linux/capability.h>

LOAD = """
import sys
from heartmula.checkpoint import CheckpointError, load_state_dict, read_json
from heartmula.mula.load import load_heartmula
what, path = sys.argv[1], sys.argv[2]
try:
    if what == "config":
        read_json(path)
    elif what == "engine":
        from heartmula import load_engine
        load_engine(path, version="tiny", device="cpu", preload=True)
    else:
        load_state_dict(path, "cpu", streamed=what == "streamed")
except CheckpointError as e:
    print("ERROR:", e)
else:
    print("LOADED")
"""


@pytest.fixture
def ckpt_copy(tiny_ckpt, tmp_path):
    shutil.copytree(tiny_ckpt, tmp_path / "ckpt")
    for p in [tmp_path / "ckpt", *(tmp_path / "ckpt").rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    yield tmp_path / "ckpt"
    for p in (tmp_path / "ckpt").rglob("*"):  # so that pytest can remove it
        p.chmod(0o755 if p.is_dir() else 0o644)


def _drop_root_read_override() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {cap})")


def _load(what: str, path: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, what, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
        preexec_fn=_drop_root_read_override if os.geteuid() == 0 else None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_the_child_can_load_a_readable_copy(ckpt_copy):
    # Without this, a child that cannot read anything would pass the tests below for the wrong reason.
    assert _load("file", ckpt_copy / "HeartMuLa-oss-tiny") == "LOADED"
    assert _load("streamed", ckpt_copy / "HeartMuLa-oss-tiny") == "LOADED"


@pytest.mark.parametrize("what,unreadable,load", [
    ("file", "HeartMuLa-oss-tiny/model.safetensors", "HeartMuLa-oss-tiny"),
    ("streamed", "HeartMuLa-oss-tiny/model.safetensors", "HeartMuLa-oss-tiny"),
    ("file", "HeartMuLa-oss-tiny", "HeartMuLa-oss-tiny"),
    ("config", "HeartMuLa-oss-tiny/config.json", "HeartMuLa-oss-tiny/config.json"),
    ("engine", "HeartCodec-oss/model.safetensors", "."),
    ("engine", "HeartMuLa-oss-tiny/model.safetensors", "."),
])
def test_unreadable_checkpoint_says_permission_denied(ckpt_copy, what, unreadable, load):
    (ckpt_copy / unreadable).chmod(0)
    out = _load(what, ckpt_copy / load)
    assert out.startswith("ERROR:"), out
    assert f"permission denied: {ckpt_copy / unreadable}" in out, out
    assert "No such file" not in out and "download it again" not in out, out
