"""Hostile clients of `varedit serve`: bodies built to crash the parser, inputs built to be echoed back,
non-images, clients that vanish while their job runs, headers sent a byte at a time, tokens in URLs.
Each gets a 4xx with one short line (or its connection closed), and the server answers a normal request
afterwards. The transport-level cases run on a real uvicorn on 127.0.0.1, configured as `varedit serve`
configures it."""
from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from contextlib import contextmanager
from html.parser import HTMLParser
from importlib import resources

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install -e '.[server]')")
pytest.importorskip("uvicorn", reason="the server extra is not installed (pip install -e '.[server]')")
httpx = pytest.importorskip("httpx", reason="httpx (FastAPI's test client) is not installed")
from fastapi.testclient import TestClient

from varedit.server import ServerConfig, create_app
from varedit.server.schemas import MAX_DETAIL
from varedit.server.transport import RedactTokens, redact, uvicorn_config

SN = 6  # the demo model's scales


@pytest.fixture(scope="module")
def editor():
    from varedit import VarEditPipeline
    return VarEditPipeline.from_pretrained("demo", device="cpu").editor


@pytest.fixture(scope="module")
def client(editor):
    with TestClient(create_app(editor, ServerConfig(max_candidates=2))) as c:
        yield c


@pytest.fixture(scope="module")
def photo_b64() -> str:
    rng = np.random.default_rng(0)
    b = io.BytesIO()
    Image.fromarray((rng.random((96, 128, 3)) * 255).astype(np.uint8)).save(b, "PNG")
    return base64.b64encode(b.getvalue()).decode()


def short_4xx(r, status: int | tuple[int, ...]) -> str:
    """The one-line detail of a 4xx answer, no longer than the server's cap, with no Python repr."""
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail
    assert len(detail) <= MAX_DETAIL and " at 0x" not in detail, detail[:300]
    return detail


def healthy(c, photo_b64: str) -> None:
    """A normal model request still succeeds."""
    r = c.post("/api/v1/infer-label", json={"image": photo_b64, "box": [20, 20, 80, 70]})
    assert r.status_code == 200 and r.json()["name"], r.text[:300]


# ---- bodies that broke the JSON parser ------------------------------------------------------------------
def post_raw(c, body: bytes, path: str = "/api/v1/generate"):
    return c.post(path, content=body, headers={"content-type": "application/json"})


def test_deeply_nested_json_is_a_400(client, photo_b64):
    for depth in (100_000, 40):  # past the interpreter's recursion limit, and past the server's own
        r = post_raw(client, b'{"class": ' + b"[" * depth + b"]" * depth + b"}")
        assert "more than 32 levels deep" in short_4xx(r, 400)
    r = post_raw(client, b'{"class": 1, "extra": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}")
    assert "levels deep" in short_4xx(r, 400)
    r = post_raw(client, b'{"class": [[1]]}')  # shallow: pydantic's answer
    assert "class" in short_4xx(r, 422)
    healthy(client, photo_b64)


def test_integer_too_long_to_convert_is_a_400(client, photo_b64):
    r = post_raw(client, b'{"class": 1, "seed": ' + b"9" * 5000 + b"}")
    assert "integer of 5000 digits" in short_4xx(r, 400)
    r = post_raw(client, b'{"class": 1, "seed": -' + b"1" * 101 + b"}")
    assert "integer of 101 digits" in short_4xx(r, 400)
    r = post_raw(client, b'{"class": 1, "seed": ' + b"9" * 30 + b"}")  # converts; out of range
    assert "seed" in short_4xx(r, 422)
    r = client.post("/api/v1/generate", data={"class": "1", "seed": "9" * 5000})  # a form field
    assert "seed" in short_4xx(r, 422)
    healthy(client, photo_b64)


# ---- non-images ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [b"hello, world", b"GIF89a" + bytes(20), b"%PDF-1.4\n" + bytes(100)])
def test_non_image_upload_names_no_python_object(client, photo_b64, data):
    r = client.post("/api/v1/upscale", files={"image": ("x.bin", data)})
    detail = short_4xx(r, 422)
    assert detail == "image: the upload is not an image (send PNG, JPEG, WebP, TIFF, BMP or GIF)"
    r = client.post("/api/v1/inpaint", json={"image": photo_b64, "mask": base64.b64encode(data).decode()})
    assert short_4xx(r, 422).startswith("mask: the upload is not an image")
    assert "<" not in detail


# ---- what an error repeats ---------------------------------------------------------------------------
def test_errors_repeat_at_most_a_little_of_the_input(client, photo_b64):
    r = client.post("/api/v1/generate", json={"class": "x" * 1_000_000})
    d = short_4xx(r, 422)
    assert d.startswith("unknown class 'xxx") and "(1000002 characters)" in d and len(d) < 600
    r = client.post("/api/v1/generate", json={f"f{i}": 1 for i in range(100_000)})
    d = short_4xx(r, 422)
    assert d == "f0: unknown field; f1: unknown field; f2: unknown field; f3: unknown field; " \
                "f4: unknown field; and 99995 more"
    r = client.post("/api/v1/generate", json={"y" * 500_000: 1})
    assert "unknown field" in (d := short_4xx(r, 422)) and len(d) < 400
    r = client.post("/api/v1/inpaint", data={"image": photo_b64, "box": "1," * 300_000})
    assert "expected numbers" in (d := short_4xx(r, 422)) and len(d) < 400
    r = client.post("/api/v1/upscale", files={"image": ("p.png", base64.b64decode(photo_b64)),
                                              "z" * 1_000: ("x.png", b"123")})
    assert "unexpected file" in (d := short_4xx(r, 422)) and len(d) < 400
    r = client.post("/api/v1/generate", json={"class": "star"}, headers={"Origin": "http://" + "o" * 50_000})
    assert "cross-origin" in (d := short_4xx(r, 403)) and len(d) < 400
    r = client.post("/api/v1/generate?" + "&".join(f"stream=x{i}" for i in range(20)) + "&format=" + "g" * 5000,
                    json={"class": "star"})
    assert "format" in (d := short_4xx(r, 422)) and len(d) < 600
    healthy(client, photo_b64)


# ---- security headers -------------------------------------------------------------------------------
def test_security_headers_on_every_answer(client):
    for path, status in (("/", 200), ("/js/app.js", 200), ("/api/v1/health", 200), ("/api/v1/nope", 404),
                         ("/docs", 200)):
        r = client.get(path)
        assert r.status_code == status, path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    csp = dict(d.strip().split(" ", 1) for d in client.get("/").headers["content-security-policy"].split(";"))
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"  # nothing inline on the editor
    assert set(csp["img-src"].split()) == {"'self'", "data:", "blob:"} and csp["connect-src"] == "'self'"
    assert "'unsafe-inline'" in client.get("/docs").headers["content-security-policy"]  # Swagger UI's script
    cfg = ServerConfig(token="a-long-enough-token", allowed_hosts=("127.0.0.1",))
    with TestClient(create_app(client.app.state.editor, cfg), base_url="http://127.0.0.1") as c:
        for r in (c.get("/api/v1/model"), c.get("/", headers={"Host": "evil.example"})):  # refused by the guard
            assert r.status_code in (400, 401) and r.headers["x-frame-options"] == "DENY"


class _InlineFinder(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and not a.get("src"):
            self.found.append("an inline <script>")
        if tag == "style":
            self.found.append("a <style> element")
        self.found += [f"{tag} {k}=" for k in a if k == "style" or k.startswith("on")]
        if tag in ("script", "link", "img") and any(str(a.get(k, "")).startswith(("http:", "https:", "//"))
                                                    for k in ("src", "href")):
            self.found.append(f"{tag} from another site")


def test_editor_page_fits_its_content_security_policy():
    """The editor's HTML has nothing the policy blocks: no inline script, style or event handler, and
    nothing loaded from another site (the browser test checks the page at work)."""
    f = _InlineFinder()
    f.feed(resources.files("varedit.server").joinpath("static", "index.html").read_text())
    assert f.found == []


# ---- a real server ---------------------------------------------------------------------------------------
class ChattyEditor:
    """The demo editor whose generation reports a scale every few milliseconds, far more often than once a
    second, until it is cancelled (its progress callback raises) or ``stop`` is set."""

    def __init__(self, ed, stop: threading.Event):
        self._ed, self._stop = ed, stop
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._ed, name)

    def run(self, request, *, callback=None, preview=False):  # the server runs every task as a request
        if request.task != "generate":
            return self._ed.run(request, callback=callback, preview=preview)
        self.calls += 1
        i = 0
        while not self._stop.wait(0.004):
            callback(i % SN, SN, None)
            i += 1
        raise RuntimeError("never cancelled")


@contextmanager
def real_server(app, cfg: ServerConfig, **kw):
    """``app`` on uvicorn in a thread, on a free loopback port, as `varedit serve` configures uvicorn."""
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    server = __import__("uvicorn").Server(uvicorn_config(app, cfg, host="127.0.0.1", port=port,
                                                         **{"log_level": "warning", **kw}))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        for _ in range(400):
            if server.started:
                break
            time.sleep(0.025)
        assert server.started
        yield port
    finally:
        server.should_exit = True
        th.join(15)


def wait_for(fn, what: str, bound_s: float = 60.0):
    """Poll ``fn`` until it returns a true value; fail after ``bound_s`` (a bound on a hang, not a
    measurement: each wait here ends within milliseconds when the server works)."""
    end = time.monotonic() + bound_s
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.02)
    pytest.fail(f"gave up waiting for {what}")


def raw_post(port: int, path: str, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def test_client_gone_cancels_a_chatty_job(editor, photo_b64):
    """A client closes its connection while its job runs and reports scales many times a second: the job
    is cancelled (at its next scale), for a streaming and for a plain request, and the server serves the
    next one."""
    stop = threading.Event()
    cfg = ServerConfig()
    chatty = ChattyEditor(editor, stop)
    app = create_app(chatty, cfg)
    try:
        with real_server(app, cfg) as port:
            base = f"http://127.0.0.1:{port}"

            def queue() -> dict:
                return httpx.get(f"{base}/api/v1/health", timeout=30).json()["queue"]

            s = raw_post(port, "/api/v1/generate?stream=true&preview=false", {"class": 1})
            seen = b""
            while seen.count(b"event: progress") < 3:  # running, and reporting
                chunk = s.recv(65536)
                assert chunk, seen
                seen += chunk
            s.close()
            st = wait_for(lambda: (q := queue())["cancelled"] == 1 and not q["running"] and q, "the stream's job")
            assert st["failed"] == 0 and st["completed"] == 0

            s = raw_post(port, "/api/v1/generate", {"class": 2})
            wait_for(lambda: chatty.calls == 2 and queue()["running"], "the plain request's job to run")
            s.close()
            st = wait_for(lambda: (q := queue())["cancelled"] == 2 and not q["running"] and q, "the plain job")
            assert st["failed"] == 0 and st["completed"] == 0
            r = httpx.post(f"{base}/api/v1/infer-label", json={"image": photo_b64, "box": [20, 20, 80, 70]},
                           timeout=60)
            assert r.status_code == 200 and queue()["completed"] == 1
    finally:
        stop.set()


def read_all(s: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def read_response(s: socket.socket) -> bytes:
    """One whole response with a Content-Length (the connection stays open)."""
    out = b""
    while b"\r\n\r\n" not in out:
        chunk = s.recv(65536)
        assert chunk, out
        out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    length = next(int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n")[1:])
                  if k.strip().lower() == b"content-length")
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, out
        body += chunk
    return head + b"\r\n\r\n" + body


def test_request_heads_have_a_deadline(editor):
    """A connection that sends its head a byte at a time, or nothing at all, is closed once the head's
    deadline passes (408 when part of a head came); a kept-alive connection's next head has one too."""
    cfg = ServerConfig(header_timeout_s=0.3)
    app = create_app(editor, cfg)
    with real_server(app, cfg) as port:
        head = f"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
        slow = socket.create_connection(("127.0.0.1", port), timeout=30)
        for b in head[:5]:  # then stalls, as a client dribbling bytes does between them
            slow.sendall(bytes([b]))
        got = read_all(slow)  # returns when the server closes the connection
        slow.close()
        assert got.startswith(b"HTTP/1.1 408 ") and b"did not arrive in time" in got

        idle = socket.create_connection(("127.0.0.1", port), timeout=30)
        assert read_all(idle) == b""  # opened, nothing sent: closed without an answer
        idle.close()

        kept = socket.create_connection(("127.0.0.1", port), timeout=30)
        kept.sendall(head + b"\r\n")
        first = read_response(kept)
        assert first.startswith(b"HTTP/1.1 200 ") and b'"status":"ok"' in first
        kept.sendall(head)  # the next request's head, never finished
        assert read_all(kept).startswith(b"HTTP/1.1 408 ")
        kept.close()

        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=30).json()["status"] == "ok"


def test_query_token_is_redacted_in_the_access_log(editor):
    token = "query-token-0123456789"
    cfg = ServerConfig(token=token)
    app = create_app(editor, cfg)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    with real_server(app, cfg, log_level="info", access_log=True) as port:
        keep = Keep()
        logging.getLogger("uvicorn.access").addHandler(keep)
        try:
            base = f"http://127.0.0.1:{port}"
            assert httpx.get(f"{base}/api/v1/model?token={token}&x=1", timeout=30).status_code == 200
            assert httpx.get(f"{base}/?token={token}", timeout=30).status_code == 200
        finally:
            logging.getLogger("uvicorn.access").removeHandler(keep)
    lines = [r.getMessage() for r in records]
    assert any("/api/v1/model?token=[redacted]&x=1" in ln for ln in lines), lines
    assert any("/?token=[redacted]" in ln for ln in lines), lines
    assert not any(token in ln for ln in lines), lines


def test_redact():
    assert redact("GET /?token=abc&x=1 HTTP/1.1") == "GET /?token=[redacted]&x=1 HTTP/1.1"
    assert redact("/a?x=1&TOKEN=abc") == "/a?x=1&TOKEN=[redacted]"
    assert redact("/a?mytoken=abc") == "/a?mytoken=abc"
    rec = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                            ("1.2.3.4:5", "GET", "/x?token=s3cret", "1.1", 200), None)
    assert RedactTokens().filter(rec) and "s3cret" not in rec.getMessage()
