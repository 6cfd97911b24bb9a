"""Atomic file writes: an output appears complete or not at all, and inputs are never overwritten."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from PIL import Image


def atomic_write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it into place."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs and package data must be readable like any file
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write_with(path, lambda f: f.write(data))


def atomic_write_many(items: Sequence[tuple[str | os.PathLike, bytes]]) -> list[Path]:
    """Write several files as one: every file is written to a temporary file beside its target and
    flushed first, and only when all of them are complete are they renamed into place, the first item
    last.  A failure while writing (a full disk) leaves none of them, so with the image first and its
    sidecar second, an image never appears without its sidecar."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in items:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
            staged.append((tmp, p))
            os.chmod(tmp, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, p in reversed(staged):
            os.replace(tmp, p)
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise
    return [p for _, p in staged]


def save_image(img: Image.Image, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Save a PIL image atomically; the format follows the suffix (PNG when there is none)."""
    p = Path(path)
    fmt = Image.registered_extensions().get(p.suffix.lower(), "PNG")
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    return atomic_write_with(p, lambda f: img.save(f, format=fmt, **kwargs))


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    data = (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
    return atomic_write_with(path, lambda f: f.write(data))
