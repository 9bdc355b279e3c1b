"""Login and request guards of a running app.py (issue 17, item 6), through plain HTTP:
login back-off, nothing but the login page without a login, a private upload folder per
instance, and huge request bodies refused before they are read, with and without --auth."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "alice", "s3cret"
HUGE = 300_000_000  # the attacker's 300 MB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def guarded_app(tiny_ckpt, tmp_path_factory, heartmula_cache):
    """app.py --auth alice:s3cret --max-file-size 1mb, on its own port and outputs folder."""
    from conftest import StudioApp

    import httpx

    class AuthApp(StudioApp):
        def start(self, timeout_s: float = 180) -> None:
            port = _free_port()
            self.log = self.root / "guarded-app.log"
            self.proc = subprocess.Popen(
                [sys.executable, "app.py", "--model-path", str(self.ckpt), "--version", "tiny", "--device", "cpu",
                 "--port", str(port), "--output-dir", str(self.output_dir), "--auth", f"{USER}:{PASSWORD}",
                 "--max-file-size", "1mb", "--no-warmup"],
                cwd=ROOT, env=dict(os.environ, HEARTMULA_HOME=str(self.home), GRADIO_ANALYTICS_ENABLED="False"),
                stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
            self.url = f"http://127.0.0.1:{port}/"
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    if httpx.get(self.url, timeout=2).status_code == 200:  # the login page
                        return
                except httpx.TransportError:
                    time.sleep(0.3)
            pytest.fail(f"app.py --auth did not start:\n{self.log.read_text()[-3000:]}")

    app = AuthApp(tiny_ckpt, tmp_path_factory.mktemp("guarded"))
    app.start()
    yield app
    app.stop()


@contextlib.contextmanager
def _login(url: str):
    import httpx

    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("login", data={"username": USER, "password": PASSWORD})
        assert r.status_code == 200, r.text
        yield http


# ----- nothing but the login page without a login -----------------------------------------------
def test_the_page_without_a_login_describes_no_endpoint(guarded_app):
    import httpx

    page = httpx.get(guarded_app.url).text
    assert '"auth_required": true' in page.replace(":true", ": true")
    assert "window.gradio_api_info = null;" in page and "named_endpoints" not in page and "/generate" not in page
    with _login(guarded_app.url) as http:
        assert "named_endpoints" in http.get("").text  # logged in: the page is whole


@pytest.mark.parametrize("method, path, body", [
    ("POST", "gradio_api/cancel", {"session_hash": "x", "fn_index": 0, "event_id": "e"}),
    ("GET", "gradio_api/queue/data?session_hash=x", None),
    ("POST", "gradio_api/queue/join", {"data": [], "fn_index": 0, "session_hash": "x"}),
    ("GET", "gradio_api/heartbeat/x", None),
    ("POST", "gradio_api/reset", {"session_hash": "x", "fn_index": 0, "event_id": "e"}),
    ("POST", "gradio_api/call/generate", {"data": []}),
    ("POST", "gradio_api/stream/e", {}),
    ("GET", "gradio_api/info", None),
    ("GET", "config", None),
    ("GET", "gradio_api/runs", None),
    ("GET", "monitoring/x", None),
])
def test_every_route_but_the_login_page_needs_a_login(guarded_app, method, path, body):
    import httpx

    r = httpx.request(method, guarded_app.url + path, json=body, timeout=30)
    assert r.status_code == 401, (r.status_code, r.text[:300])
    with _login(guarded_app.url) as http:  # the same call with a login is not refused for the login
        with http.stream(method, path, json=body) as r:  # heartbeat and queue/data never end: status only
            assert r.status_code != 401


def test_the_login_page_itself_still_loads(guarded_app):
    import re

    import httpx

    page = httpx.get(guarded_app.url).text
    assets = re.findall(r'(?:src|href)="\./(assets/[^"]+)"', page)
    assert assets
    for asset in assets[:5]:
        assert httpx.get(guarded_app.url + asset).status_code == 200, asset


# ----- a private upload folder per instance --------------------------------------------------------
def test_uploads_are_private_to_each_instance(guarded_app, studio_app):
    import httpx

    with _login(guarded_app.url) as http:
        r = http.post("gradio_api/upload", files={"files": ("mine.wav", b"RIFF-private-upload")})
        assert r.status_code == 200, r.text
        (path,) = r.json()
        assert http.get("gradio_api/file=" + path).content == b"RIFF-private-upload"
    temp = guarded_app.output_dir / ".studio-tmp"
    assert Path(path).resolve().is_relative_to(temp.resolve())
    assert stat.S_IMODE(temp.stat().st_mode) == 0o700
    other = httpx.get(studio_app.url + "gradio_api/file=" + path)  # another studio on the same machine
    assert other.status_code in (403, 404) and b"private-upload" not in other.content


# ----- huge bodies are refused before they are read ------------------------------------------------
def _raw_post(url: str, path: str, *, cookie: str = "", content_length: int | None, send_bytes: int) -> tuple[int, int]:
    """POST `send_bytes` of body (declared as `content_length`, or chunked when None) and stop
    as soon as the server answers: (status, bytes sent). A server that reads everything answers
    only after the whole body, which this never sends: the read times out and the test fails."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    head = [f"POST /{path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    head.append(f"Content-Length: {content_length}" if content_length is not None else "Transfer-Encoding: chunked")
    if cookie:
        head.append(f"Cookie: {cookie}")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        block = b"[" * 65536
        s.setblocking(False)
        answer = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and b"\r\n" not in answer:
            try:
                answer += s.recv(4096)
                if not answer:
                    break
                continue
            except BlockingIOError:
                pass
            if sent < send_bytes:
                piece = block if content_length is not None else b"%x\r\n%s\r\n" % (len(block), block)
                try:
                    s.send(piece)
                    sent += len(block)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    time.sleep(0.01)
            else:
                time.sleep(0.01)
    assert answer.startswith(b"HTTP/1.1 "), f"no answer after {sent} bytes sent"
    return int(answer.split()[1]), sent


def _server_rss_mb(app) -> float:
    for line in Path(f"/proc/{app.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the peak resident size so far
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("who", ["guarded-no-login", "guarded-logged-in", "open"])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_huge_bodies_are_refused_before_they_are_read(guarded_app, studio_app, who, declared):
    app = studio_app if who == "open" else guarded_app
    cookie = ""
    if who == "guarded-logged-in":
        with _login(guarded_app.url) as http:
            cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
    before = _server_rss_mb(app)
    status, sent = _raw_post(app.url, "gradio_api/call/generate", cookie=cookie,
                             content_length=HUGE if declared else None, send_bytes=HUGE)
    assert status in ((401, 413) if who == "guarded-no-login" else (413,)), status
    assert sent < 20_000_000, f"the server read {sent} bytes before refusing"
    assert _server_rss_mb(app) - before < 100


# ----- login back-off (last: it leaves this address's record clear again) --------------------------
def test_failed_logins_back_off(guarded_app):
    import httpx

    with httpx.Client(base_url=guarded_app.url, timeout=30) as http:
        def attempt(password):
            return http.post("login", data={"username": USER, "password": password})

        assert [attempt(f"wrong{i}").status_code for i in range(5)] == [400] * 5
        # A forged X-Forwarded-For is not a new client. Were it one, each of these would be a first
        # failure (400); as the same client they are refused (429), but for one checked try each
        # time the window (1 s, doubling) runs out on a slow machine.
        forged = [http.post("login", data={"username": USER, "password": f"forged{i}"},
                            headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(20)]
        assert forged.count(429) >= 15 and set(forged) <= {400, 429}, forged
        start = time.monotonic()
        answers = [attempt(f"guess{i}") for i in range(300)]
        elapsed = time.monotonic() - start
        assert elapsed < 60
        # Inside a window every try is refused unchecked (429); when one runs out (a loaded machine
        # is slow through 300 tries) one try is checked (400) and the window doubles: in t seconds
        # at most log2(t) + 2 are checked, however fast the machine.
        codes = [r.status_code for r in answers]
        assert set(codes) <= {400, 429} and codes.count(400) <= math.log2(max(elapsed, 1.0)) + 2, (codes.count(400),
                                                                                                  elapsed)
        refused = [r for r in answers if r.status_code == 429]
        assert "too many failed logins; try again in" in refused[-1].text
        assert attempt(PASSWORD).status_code == 429  # not even the right one is checked in the window
        wait_s = int(refused[-1].headers["retry-after"])
        assert 1 <= wait_s <= 64  # 1 s, doubled once for each try checked after a window ran out
        deadline = time.monotonic() + 10 * wait_s
        while (r := attempt(PASSWORD)).status_code == 429 and time.monotonic() < deadline:
            time.sleep(float(r.headers["retry-after"]))  # the server says when the window ends
        assert r.status_code == 200, r.text
        assert attempt("wrong-again").status_code == 400  # a success clears the record
        assert attempt(PASSWORD).status_code == 200
