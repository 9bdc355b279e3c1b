"""`Guard`: an ASGI middleware in front of Gradio's server for what Gradio leaves open (issue 17).

- Request bodies are capped for every route: from Content-Length before anything is read (413),
  and by counting the bytes of a body sent without one. Uploads get the --max-file-size limit
  plus room for the multipart framing; every other route, whose bodies are JSON arguments or a
  login form, gets BODY_LIMIT.
- With --auth: only the login page, the login form and the page's static files answer without
  a login. Gradio itself leaves /gradio_api/cancel, queue/data, heartbeat, reset and others open
  (a stranger could cancel a user's job), and its page at / embeds every endpoint's API
  description before login; here anything not on the short PUBLIC lists gets 401, and the
  page without a login has its `window.gradio_api_info` emptied.
- With --auth: failed logins back off exponentially per client address: after LOGIN_FREE_FAILURES
  failures, every further attempt within the back-off window is refused (429, "too many failed
  logins; try again in N s") without checking the password; the window doubles with each
  failure checked after it, up to LOGIN_MAX_BACKOFF_S. A success clears the address.
  Behind a reverse proxy every client shares the proxy's address (and its back-off).

Gradio 6 gives an auth callable only (username, password), never the request, so the back-off
cannot live there; it is middleware, passed to launch() through app_kwargs.
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict

BODY_LIMIT = 2 * 1024 * 1024  # JSON arguments (lyrics are a few KB) and login forms
MULTIPART_SLACK = 1024 * 1024  # boundaries and part headers around an upload of max_file_size
UPLOAD_PATHS = ("/gradio_api/upload",)
LOGIN_PATHS = ("/login", "/login/")
LOGIN_FREE_FAILURES = 5
LOGIN_BASE_BACKOFF_S = 1.0
LOGIN_MAX_BACKOFF_S = 15 * 60.0
LOGIN_TRACKED_CLIENTS = 10_000  # oldest forgotten first: a flood of addresses cannot fill memory

# Open without a login: the login page, the form, the page's static files, and the one call
# launch() makes to itself before anyone logs in (startup-events, idempotent).
PUBLIC_PATHS = {"/", "/login", "/login/", "/logout", "/favicon.ico", "/manifest.json", "/robots.txt",
                "/theme.css", "/gradio_api/theme.css", "/gradio_api/startup-events", "/gradio_api/app_id",
                "/gradio_api/app_id/", "/gradio_api/login_check", "/gradio_api/login_check/",
                "/gradio_api/token", "/gradio_api/token/", "/gradio_api/user", "/gradio_api/user/"}
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")
_API_INFO = re.compile(rb"(window\.gradio_api_info = ).*?(;</script>)", re.S)


def parse_size(text: str | int) -> int:
    """'200mb' / '1 GB' / '512kb' / 1000 -> bytes (Gradio's max_file_size spelling)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?b?)\s*", str(text).lower())
    if not m:
        raise ValueError(f"size {text!r} is not understood; write it like 200mb, 1gb or 512kb")
    unit = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
            "t": 1024**4, "tb": 1024**4}[m.group(2)]
    return int(float(m.group(1)) * unit)


class _TooLarge(Exception):
    pass


class Guard:
    def __init__(self, app, *, auth: bool = False, max_file_size: int | None = None):
        self.app = app
        self.auth = auth
        self.upload_limit = (max_file_size if max_file_size is not None else 1024**3) + MULTIPART_SLACK
        self.failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # client -> (count, refused until)

    # ----- ASGI -----------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit = self.upload_limit if path.rstrip("/") in UPLOAD_PATHS else BODY_LIMIT
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await _respond(send, 413, f"request body too large: {length} bytes; the limit for {path} "
                                             f"is {limit} bytes")
        authed = not self.auth or _logged_in(scope)
        if not authed and not (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)):
            return await _respond(send, 401, "Not authenticated: log in first")
        if self.auth and path in LOGIN_PATHS and scope["method"] == "POST":
            return await self._login(scope, receive, send, limit)
        if not authed and path == "/" and scope["method"] == "GET":
            return await self._without_api_info(scope, receive, send)
        return await self._limited(scope, receive, send, limit)

    async def _limited(self, scope, receive, send, limit: int, on_status=None):
        """Run the app with the body counted as it arrives; past `limit`, the answer is 413."""
        got, over, started = 0, False, False

        async def counted_receive():
            nonlocal got, over
            if over:
                raise _TooLarge
            message = await receive()
            if message["type"] == "http.request":
                got += len(message.get("body", b""))
                if got > limit:
                    over = True
                    raise _TooLarge
            return message

        async def checked_send(message):
            nonlocal started
            if over:  # the app turned our exception into its own error: answer 413 instead, once
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _respond(send, 413, f"request body too large: over {limit} bytes")
                return
            if message["type"] == "http.response.start":
                started = True
                if on_status is not None:
                    on_status(message["status"])
            await send(message)

        try:
            await self.app(scope, counted_receive, checked_send)
        except _TooLarge:
            if not started:
                await _respond(send, 413, f"request body too large: over {limit} bytes")

    # ----- login back-off -------------------------------------------------------------------
    async def _login(self, scope, receive, send, limit: int):
        client = (scope.get("client") or ("?", 0))[0]
        now = time.monotonic()
        count, until = self.failures.get(client, (0, 0.0))
        if now < until:
            wait_s = int(until - now) + 1
            return await _respond(send, 429, f"too many failed logins; try again in {wait_s} s",
                                  headers=[(b"retry-after", str(wait_s).encode())])

        def on_status(status: int) -> None:
            if 200 <= status < 300:
                self.failures.pop(client, None)
            elif status in (400, 401):
                n = count + 1
                backoff_s = 0.0 if n < LOGIN_FREE_FAILURES else \
                    min(LOGIN_BASE_BACKOFF_S * 2 ** (n - LOGIN_FREE_FAILURES), LOGIN_MAX_BACKOFF_S)
                self.failures[client] = (n, time.monotonic() + backoff_s)
                self.failures.move_to_end(client)
                while len(self.failures) > LOGIN_TRACKED_CLIENTS:
                    self.failures.popitem(last=False)

        await self._limited(scope, receive, send, limit, on_status)

    # ----- the page without a login ---------------------------------------------------------
    async def _without_api_info(self, scope, receive, send):
        """Gradio's login page, with the API description it embeds replaced by null (the page's
        script then asks /gradio_api/info, which needs the login)."""
        start, chunks = None, []

        async def buffered_send(message):
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = _API_INFO.sub(rb"\1null\2", b"".join(chunks))
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self._limited(scope, receive, buffered_send, BODY_LIMIT)


def _header(scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k.lower() == name:
            return v.decode("latin-1").strip()
    return None


def _logged_in(scope) -> bool:
    """The request carries a token Gradio's /login handed out (Gradio keeps them in app.tokens)."""
    app = scope.get("app")
    tokens = getattr(app, "tokens", None) or {}
    cookie_id = getattr(app, "cookie_id", None)
    if cookie_id is None:
        return False
    cookies = {}
    for part in (_header(scope, b"cookie") or "").split(";"):
        k, sep, v = part.strip().partition("=")
        if sep:
            cookies[k] = v
    for name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
        if cookies.get(name) in tokens:
            return True
    return False


async def _respond(send, status: int, detail: str, headers=()) -> None:
    body = json.dumps({"detail": detail, "error": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})
