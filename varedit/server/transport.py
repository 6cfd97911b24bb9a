"""How ``varedit serve`` runs the app on uvicorn: a deadline for request heads, and an access log that
never shows an access token.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but a connection that
is opened and then sends nothing, or sends its request line and headers a byte at a time, is kept open
for as long as the client likes (uvicorn has no header-read timeout), and enough of them exhaust the
process's file descriptors. :func:`header_timeout_protocol` is uvicorn's h11 protocol with one more
timer: a request's complete head must arrive within ``header_timeout_s`` of its first byte (of the
connection being opened, for a new one), else the connection is closed, with a 408 when part of a head
had come. Request bodies have no such deadline (a large upload on a slow link may take minutes); the
body size is bounded by ``max_upload_bytes``.

The editor's address carries the token as ``?token=`` (the page moves it to session storage and out of
the address bar), and API clients may send it so too: :class:`RedactTokens` rewrites it to
``token=[redacted]`` in every access-log line.
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from .config import ServerConfig

if TYPE_CHECKING:
    import uvicorn

_TOKEN_PARAM = re.compile(r"([?&]token=)[^&#\s\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the value of every ``token=`` query parameter replaced by ``[redacted]``."""
    return _TOKEN_PARAM.sub(r"\1[redacted]", text) if "token=" in text.lower() else text


class RedactTokens(logging.Filter):
    """A logging filter that redacts ``token=`` query parameters in a record's arguments and message
    (uvicorn's access log passes the path with its query string as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def _timeout_reply() -> bytes:
    body = json.dumps({"detail": "the request's headers did not arrive in time"}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def header_timeout_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol, closing a connection whose request head takes longer than
    ``header_timeout_s`` seconds (see the module's docstring)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return  # closed already, or the head came (the timer is cancelled then; this is a race)
            partial = bool(self.conn.trailing_data[0])
            self.logger.info("closing a connection from %s: no complete request head within %g s",
                             "%s:%d" % self.client if self.client else "?", header_timeout_s)
            if partial:
                self.transport.write(_timeout_reply())
            self.transport.close()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # waiting for a request's head (a new connection, or the next request on a kept-alive one,
            # whose first bytes just stopped uvicorn's keep-alive timer): the head's deadline runs
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm()
            else:
                self._disarm()

    return HeaderTimeoutH11


def log_config(base: dict[str, Any] | None = None) -> dict[str, Any]:
    """uvicorn's logging configuration (``base``, default uvicorn's own) with :class:`RedactTokens` on
    its access log."""
    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(base if base is not None else LOGGING_CONFIG)
    cfg.setdefault("filters", {})["redact_tokens"] = {"()": f"{__name__}.RedactTokens"}
    loggers = cfg.setdefault("loggers", {})
    for name in ("uvicorn.access", "uvicorn.error"):
        entry = loggers.setdefault(name, {})
        entry["filters"] = [*entry.get("filters", []), "redact_tokens"]
    return cfg


def uvicorn_config(app: Any, config: ServerConfig, **kwargs: Any) -> uvicorn.Config:
    """The ``uvicorn.Config`` that serves ``app`` (made by ``create_app(editor, config)``): the h11
    protocol with the head deadline, the redacting access log, no ``Server`` header. ``kwargs`` go to
    ``uvicorn.Config`` (host, port, log_level, ...)."""
    import uvicorn

    kwargs.setdefault("server_header", False)
    return uvicorn.Config(app, http=header_timeout_protocol(config.header_timeout_s),
                          log_config=log_config(), **kwargs)
