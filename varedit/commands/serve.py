"""``varedit serve``: the HTTP API and the browser editor (FastAPI on uvicorn), one loaded model."""
from __future__ import annotations

import secrets
import socket

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
    from ..cli import model_options

    @main.command()
    @model_options
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="Address to bind. Anything but loopback needs an access token (made and printed if not "
                       "given).")
    @click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
    @click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True)
    @click.option("--onnx-dir", type=click.Path(file_okay=False), default=None,
                  help="Exported ONNX folder (with --backend onnx).")
    @click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (onnx backend).")
    @click.option("--token", envvar="VAREDIT_TOKEN", default=None,
                  help="Access token for /api/ (env VAREDIT_TOKEN): 'Authorization: Bearer TOKEN' or ?token=.")
    @click.option("--queue-size", type=click.IntRange(min=0), default=8, show_default=True,
                  help="Requests that may wait while one runs; more get 503 with Retry-After.")
    @click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=300.0,
                  show_default=True, help="Seconds a request may take, queue wait included (504 after it).")
    @click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
                  help="Largest request body (base64 JSON is about 4/3 of the file).")
    @click.option("--max-pixels", type=click.IntRange(min=1), default=2048 * 2048, show_default=True,
                  help="Largest input, mask or output image in pixels.")
    @click.option("--max-candidates", type=click.IntRange(min=1), default=8, show_default=True,
                  help="Largest n (candidates or images) per request.")
    def serve(model: str, vae_path: str | None, weights_dir: str | None, num_heads: int | None, device: str,
              host: str, port: int, backend: str, onnx_dir: str | None, threads: int | None, token: str | None,
              queue_size: int, timeout_s: float, max_upload_mb: float, max_pixels: int,
              max_candidates: int) -> None:
        """Serve the HTTP API (docs at /docs) and the browser editor (at /) for one model.

        Binds 127.0.0.1 by default: reachable from this machine only, no token needed. Bound to any
        other address, every /api/ request needs the access token."""
        try:
            import uvicorn

            from ..server import ServerConfig, create_app, is_loopback
        except ImportError as e:
            raise click.ClickException(f"varedit serve needs the server extra ({e.name} is missing): "
                                       f"pip install 'varedit[server]'") from None
        if backend == "onnx" and not onnx_dir:
            raise click.ClickException("--backend onnx needs --onnx-dir DIR (made by `varedit export onnx`)")
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
            from .edit import make_editor
            editor = make_editor(backend, onnx_dir, model, vae_path, weights_dir, num_heads, device, threads)
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
            server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=5,
                                                   server_header=False))
            server.run(sockets=[sock])
        finally:
            sock.close()
