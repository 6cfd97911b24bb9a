"""Server settings: limits, queue, access control (no FastAPI or torch import here)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerConfig:
    """What one ``varedit serve`` process accepts.

    ``max_upload_bytes`` bounds a request body (an image sent as base64 JSON is about 4/3 of its file
    size); ``max_pixels`` bounds every decoded input, mask and output image (an outpaint or upscale
    that would exceed it is refused before it is queued); ``max_candidates`` bounds ``n``.
    ``queue_size`` is how many requests may wait while one runs (more get 503 with Retry-After);
    ``timeout_s`` bounds a request from submission to result, queue wait included (504 after it,
    and the job is abandoned at its next scale). ``token``: when set, every ``/api/`` request but
    the health check needs it (``Authorization: Bearer TOKEN`` or ``?token=TOKEN``).
    ``allowed_hosts``: Host header values accepted (None: any); a loopback server accepts only
    loopback names, which defeats DNS rebinding. ``header_timeout_s``: a connection must deliver a
    request's complete head (request line and headers) within this many seconds of its first byte (of
    being opened, for a new connection), or it is closed (408 when part of a head had come).
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 2048 * 2048
    max_candidates: int = 8
    queue_size: int = 8
    timeout_s: float = 300.0
    token: str | None = None
    allowed_hosts: tuple[str, ...] | None = None
    preview_max_side: int = 256
    header_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_candidates", "preview_max_side"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {self.queue_size}")
        for name in ("timeout_s", "header_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("the access token must have at least 8 characters")


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False
