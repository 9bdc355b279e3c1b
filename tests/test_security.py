"""Serving safely (issue 6, point 7): loopback by default, a loud warning without a login on
the network, a working --auth, no path outside the allowed folders through the UI or the
API, only outputs and uploads served, an upload size limit, and never a pickle loaded.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import gradio as gr
import pytest

import app
from heartmula import History, load_engine
from ui.errors import user_errors
from ui.handlers import settings
from ui.studio import Studio

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "heartmula").rglob("*.py"), *(ROOT / "ui").rglob("*.py"), ROOT / "app.py"])


# ----- no pickle, ever ---------------------------------------------------------------------------
def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = ast.unparse(f.value) if isinstance(f, ast.Attribute) else ""
            yield node, owner, name


def test_no_pickle_is_ever_loaded():
    assert len(SOURCES) > 30
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "cPickle", "dill", "joblib", "cloudpickle"} & {m.split(".")[0] for m in mods}, path
        for node, owner, name in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            kw = {k.arg: k.value for k in node.keywords}
            assert not (owner == "torch" and name == "load"), f"{where}: torch.load unpickles"
            if owner in ("np", "numpy") and name == "load":
                assert "allow_pickle" in kw and ast.literal_eval(kw["allow_pickle"]) is False, where
            if name == "from_pretrained" and not any(s in owner for s in ("Processor", "Tokenizer", "Extractor")):
                assert "use_safetensors" in kw and ast.literal_eval(kw["use_safetensors"]) is True, \
                    f"{where}: a transformers model load must pass use_safetensors=True"


# ----- model folders: only under the allowed roots ----------------------------------------------
@pytest.fixture(scope="module")
def studio(tiny_ckpt, tmp_path_factory):
    engine = load_engine(str(tiny_ckpt), version="tiny", device="cpu", preload=False)
    tmp = tmp_path_factory.mktemp("security")
    return Studio(engine=engine, history=History(tmp / "outputs"), temp_dir=tmp / "tmp")


@pytest.mark.parametrize("path", ["/etc", "/", "~", "{ckpt}/../../..", "{ckpt}/../../../etc", "/proc/self",
                                  "{tmp}/link-out"])
def test_settings_refuses_model_folders_outside_the_allowed_roots(studio, tiny_ckpt, tmp_path, path):
    (tmp_path / "link-out").symlink_to("/etc")
    path = path.format(ckpt=tiny_ckpt, tmp=tmp_path)
    with pytest.raises(gr.Error, match="model folders must be inside"):
        user_errors(settings.scan_folder)(path, None, studio=studio)
    with pytest.raises(gr.Error, match="model folders must be inside"):
        user_errors(settings.load)(studio, path, "tiny", "cpu", "auto", False)
    assert studio.engine.config.model_path == str(tiny_ckpt)


def test_settings_allows_folders_under_the_root_and_checks_the_version(studio, tiny_ckpt):
    assert studio.model_roots == (tiny_ckpt.resolve().parent,)
    assert settings.scan_folder(str(tiny_ckpt), studio=studio)["version"]["choices"] == ["tiny"]
    with pytest.raises(gr.Error, match="no version '../../etc'"):  # a version is a folder name too
        user_errors(settings.load)(studio, str(tiny_ckpt), "../../etc", "cpu", "auto", False)


def test_allowed_model_root_flag(tmp_path):
    args = app.parse_args(["--allowed-model-root", str(tmp_path), "--allowed-model-root", "/models"])
    assert args.allowed_model_root == [str(tmp_path), "/models"]
    assert app.parse_args([]).allowed_model_root is None and app.parse_args([]).max_file_size == "200mb"


# ----- host and auth ----------------------------------------------------------------------------
def test_loopback_by_default_and_a_loud_warning_on_the_network():
    assert app.parse_args([]).host == "127.0.0.1" and app.parse_args([]).auth is None
    assert app.serving_warning("127.0.0.1", None) is None
    assert app.serving_warning("0.0.0.0", ("u", "p")) is None
    for host in ("0.0.0.0", "::", "192.168.1.20"):  # any address others can reach
        text = app.serving_warning(host, None)
        assert "WARNING" in text and "ANYONE on your network" in text and "--auth USER:PASS" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_warns_before_serving_without_auth(tiny_ckpt, tmp_path):
    proc = subprocess.Popen([sys.executable, "app.py", "--model-path", str(tiny_ckpt), "--version", "tiny",
                             "--device", "cpu", "--host", "0.0.0.0", "--port", str(_free_port()),
                             "--output-dir", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    try:
        seen = ""
        deadline = time.monotonic() + 60
        while "ANYONE on your network" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert "WARNING: --host 0.0.0.0 without --auth" in seen, seen
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def auth_app(tiny_ckpt, tmp_path_factory):
    """app.py with --auth and a 1 MB upload limit."""
    from conftest import StudioApp

    class AuthApp(StudioApp):
        def start(self, timeout_s: float = 180) -> None:
            port = _free_port()
            self.log = self.root / "auth-app.log"
            self.proc = subprocess.Popen(
                [sys.executable, "app.py", "--model-path", str(self.ckpt), "--version", "tiny", "--device", "cpu",
                 "--port", str(port), "--output-dir", str(self.output_dir), "--auth", "alice:s3cret",
                 "--max-file-size", "1mb"],
                cwd=ROOT, env=dict(os.environ, HEARTMULA_HOME=str(self.home), GRADIO_ANALYTICS_ENABLED="False"),
                stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
            self.url = f"http://127.0.0.1:{port}/"
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    urllib.request.urlopen(self.url + "config", timeout=2)
                    return
                except urllib.error.HTTPError:
                    return  # answering (401: login first)
                except OSError:
                    time.sleep(0.5)
            pytest.fail("app.py --auth did not start")

    a = AuthApp(tiny_ckpt, tmp_path_factory.mktemp("auth-app"))
    a.start()
    yield a
    a.stop()


@pytest.mark.browser
def test_auth_is_required(auth_app):
    import httpx
    from gradio_client import Client

    assert httpx.get(auth_app.url + "config").status_code == 401
    assert httpx.get(auth_app.url + "gradio_api/info").status_code == 401
    from gradio_client.exceptions import AuthenticationError

    with pytest.raises(AuthenticationError, match="credentials were not provided"):
        Client(auth_app.url, verbose=False)
    with pytest.raises(ValueError, match="Could not login to|Invalid credentials"):  # gradio answers 400 or 401
        Client(auth_app.url, auth=("alice", "wrong"), verbose=False)
    client = Client(auth_app.url, auth=("alice", "s3cret"), verbose=False)
    assert "/generate" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]


@pytest.mark.browser
def test_upload_size_limit(auth_app):
    import httpx

    with httpx.Client(base_url=auth_app.url) as http:
        assert http.post("login", data={"username": "alice", "password": "s3cret"}).status_code == 200
        small = http.post("gradio_api/upload", files={"files": ("small.wav", b"\0" * 1000)})
        assert small.status_code == 200
        big = http.post("gradio_api/upload", files={"files": ("big.wav", b"\0" * 2_000_000)})
        assert big.status_code == 413 and "maximum allowed size of 1048576 bytes" in big.text


# ----- what a live app serves -------------------------------------------------------------------
def _call(url: str, api_name: str, data: list) -> tuple[str, str]:
    """POST /gradio_api/call/<api_name> as any HTTP client can; (event, data) of the result."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as http:
        event_id = http.post(f"gradio_api/call/{api_name}", json={"data": data}).json()["event_id"]
        text = http.get(f"gradio_api/call/{api_name}/{event_id}").text
    event = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")][-1]
    payload = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("data: ")][-1]
    return event, payload


@pytest.mark.browser
def test_path_traversal_through_files_and_the_api(studio_app, tmp_path):
    import httpx

    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    probes = ["/etc/passwd", "../../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", str(ROOT / "app.py"), "app.py",
              str(studio_app.ckpt / "gen_config.json"), str(studio_app.home / "presets" / "test-full.yaml"),
              str(secret)]
    for probe in probes:
        r = httpx.get(studio_app.url + "gradio_api/file=" + probe)
        assert r.status_code in (403, 404) and "TOPSECRET" not in r.text and "root:" not in r.text, probe
    # a server path handed to the Transcribe endpoint is refused, and never copied into gradio's cache
    event, _ = _call(studio_app.url, "transcribe", [{"path": str(secret), "meta": {"_type": "gradio.FileData"}},
                                                    8, 30, ""])
    assert event == "error"
    for cache in (studio_app.output_dir / ".studio-tmp", Path("/tmp/gradio")):  # the app's own, and Gradio's default
        assert not list(cache.rglob("secret.txt")), cache
    assert (studio_app.output_dir / ".studio-tmp").is_dir()  # the app keeps its uploads there
    # the Settings tab's model folder box, called through the API
    config = httpx.get(studio_app.url + "config").json()
    path_box = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "set-path")
    names = [d["api_name"] for d in config["dependencies"] if path_box in d["inputs"]]
    assert len(names) == 2  # Scan and Load
    for name in names:
        args = ["/etc", None] if len(next(d for d in config["dependencies"] if d["api_name"] == name)["inputs"]) == 2 \
            else ["/etc", "tiny", "cpu", "auto", False, "same as the language model", "none"]
        event, data = _call(studio_app.url, name, args)
        assert event == "error" and "model folders must be inside" in data, (name, data)


@pytest.mark.browser
def test_outputs_are_served(studio_app):
    import httpx
    from gradio_client import Client

    client = Client(studio_app.url, verbose=False)
    out = client.predict(lyrics="[verse]\nhi\n", tags="pop", max_audio_length_s=1, seed="5", ignore_eos=True,
                         codec_steps=2, api_name="/generate")
    assert "1 take(s)" in out[0]
    song = studio_app.output_dir / Path(out[1]["value"]).name  # this call's take (the app's outputs are shared)
    assert song.is_file()
    r = httpx.get(studio_app.url + "gradio_api/file=" + str(song))
    assert r.status_code == 200 and r.content[:4] == b"RIFF"
    meta = json.loads(song.with_suffix(".json").read_text())
    assert meta["seed"] == 5 and meta["lyrics"] == "[verse]\nhi\n" and meta["options"]["codec_steps"] == 2
