"""``varedit serve``: an HTTP API (FastAPI) over :class:`varedit.tasks.Editor` and a browser editor.

Needs the ``server`` extra (``pip install "varedit[server]"``): FastAPI, uvicorn, python-multipart.
"""
from .app import create_app
from .config import ServerConfig, is_loopback

__all__ = ["ServerConfig", "create_app", "is_loopback"]
