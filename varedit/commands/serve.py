"""``varedit serve``: the HTTP API and the browser editor (FastAPI on uvicorn), one loaded model."""
from __future__ import annotations

import secrets
import socket
from typing import Any

import click


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is a one-line error before the model loads."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise click.ClickException(f"cannot resolve --host {host!r}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e} (choose another --port)") \
            from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def register(main: click.Group) -> None:
    from .common import GroupedCommand, ModelSpec, backend_options, model_options, opt

    @main.command(cls=GroupedCommand)
    @opt("--host", group="Server", default="127.0.0.1", show_default=True,
         help="Address to bind. Anything but loopback needs an access token (made and printed if not given).")
    @opt("--port", group="Server", type=click.IntRange(1, 65535), default=8080, show_default=True)
    @opt("--token", group="Server", envvar="VAREDIT_TOKEN", default=None,
         help="Access token for /api/ (env VAREDIT_TOKEN): 'Authorization: Bearer TOKEN' or ?token=.")
    @opt("--queue-size", group="Server", type=click.IntRange(min=0), default=8, show_default=True,
         help="Requests that may wait while one runs; more get 503 with Retry-After.")
    @opt("--timeout", "timeout_s", group="Server", type=click.FloatRange(min=0, min_open=True), default=300.0,
         show_default=True, help="Seconds a request may take, queue wait included (504 after it).")
    @opt("--max-upload-mb", group="Server", type=click.FloatRange(min=0, min_open=True), default=20.0,
         show_default=True, help="Largest request body (base64 JSON is about 4/3 of the file).")
    @opt("--max-pixels", group="Server", type=click.IntRange(min=1), default=2048 * 2048, show_default=True,
         help="Largest input, mask or output image in pixels.")
    @opt("--max-candidates", group="Server", type=click.IntRange(min=1), default=8, show_default=True,
         help="Largest n (candidates or images) per request.")
    @model_options
    @backend_options
    def serve(host: str, port: int, token: str | None, queue_size: int, timeout_s: float, max_upload_mb: float,
              max_pixels: int, max_candidates: int, **kw: Any) -> None:
        """Serve the HTTP API (docs at /docs) and the browser editor (at /) for one model.

        Binds 127.0.0.1 by default: reachable from this machine only, no token needed. Bound to any
        other address, every /api/ request needs the access token."""
        from .._optional import require
        uvicorn = require(["fastapi", "fastapi_offline", "python_multipart|multipart", "uvicorn"], "varedit serve")

        from ..server import ServerConfig, create_app, is_loopback
        from ..server.transport import uvicorn_config
        spec = ModelSpec.pop(kw)
        spec.info()  # the model's files are there and readable: checked before anything is bound or loaded
        local = is_loopback(host)
        made_token = False
        if token is None and not local:
            token, made_token = secrets.token_urlsafe(24), True
        try:
            config = ServerConfig(max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=max_pixels,
                                  max_candidates=max_candidates, queue_size=queue_size, timeout_s=timeout_s,
                                  token=token,
                                  allowed_hosts=("localhost", "127.0.0.1", "::1") if local else None)
        except ValueError as e:
            raise click.ClickException(str(e)) from None
        sock = _bind(host, port)
        try:
            editor = spec.editor()
            app = create_app(editor, config)
            shown = f"[{host}]" if ":" in host else host
            base = f"http://{'127.0.0.1' if shown in ('0.0.0.0', '[::]') else shown}:{port}"
            click.echo(f"varedit serve: model {editor.model_name} ({editor.backend.name}, {editor.image_size} px)")
            click.echo(f"  editor   {base}/{'?token=' + token if token else ''}")
            click.echo(f"  API docs {base}/docs")
            if made_token:
                click.echo(f"  access token (made for this run; pass --token to choose one): {token}")
            elif token:
                click.echo("  access token required (Authorization: Bearer TOKEN)")
            server = uvicorn.Server(uvicorn_config(app, config, log_level="info", timeout_graceful_shutdown=5))
            server.run(sockets=[sock])
        finally:
            sock.close()
