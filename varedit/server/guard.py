"""Access control and limits of every request, as plain ASGI (so streamed answers pass untouched): the
Host check (DNS rebinding), the same-origin check and the token for ``/api/``, the request body limit,
and the security headers on every answer."""
from __future__ import annotations

import json
import secrets
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import schemas as S
from .config import ServerConfig

API = "/api/v1"
PUBLIC_API = (f"{API}/health",)


class BodyTooLarge(Exception):
    pass


# The editor's page loads its script and style sheet from this server and shows images from data: and
# blob: URLs; nothing inline, nothing from elsewhere, no framing.
EDITOR_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
              "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
              "frame-ancestors 'none'")
# /docs and /redoc (Swagger UI, ReDoc) start with an inline script or style and draw with inline styles
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    """Headers added to every answer: no MIME sniffing, no framing, no Referer (a page URL may carry
    ``?token=``), and a content security policy."""
    csp = DOCS_CSP if path in DOCS_PATHS else EDITOR_CSP
    return [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"), (b"content-security-policy", csp.encode())]


class Guard:
    """Host check (DNS rebinding), same-origin check and token for ``/api/``, request body limit, and the
    security headers on every answer."""

    def __init__(self, app: ASGIApp, config: ServerConfig):
        self.app = app
        self.config = config

    async def _reply(self, send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"detail": S.short_detail(detail)}).encode()
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(scope["path"])

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self._check(scope, receive, secured)

    async def _check(self, scope: Scope, receive: Receive, send: Send) -> None:
        cfg = self.config
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if cfg.allowed_hosts is not None:
            name = urlsplit(f"//{host}").hostname or ""
            if name not in cfg.allowed_hosts and f"[{name}]" not in cfg.allowed_hosts:
                await self._reply(send, 400, f"unexpected Host header {S.clip(repr(host))}: this server answers "
                                             f"only to {', '.join(cfg.allowed_hosts)}")
                return
        path: str = scope["path"]
        if not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            await self._reply(send, 403, f"cross-origin request from {S.clip(repr(origin))} refused")
            return
        if cfg.token is not None and path not in PUBLIC_API:
            given = None
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            else:
                given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [None])[0]
            if given is None or not secrets.compare_digest(given.encode(), cfg.token.encode()):
                await self._reply(send, 401, "missing or wrong access token: send 'Authorization: Bearer TOKEN' "
                                             "(the token `varedit serve` printed)",
                                  {"WWW-Authenticate": "Bearer"})
                return
        limit = cfg.max_upload_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reply(send, 413, f"request body is {int(length) / 1e6:.1f} MB, above this server's limit "
                                         f"of {limit / 1e6:.1f} MB")
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"request body is above this server's limit of {limit / 1e6:.1f} MB")
            return msg

        await self.app(scope, counted, send)
