"""Images in and out of the server: base64 or raw bytes in (checked against the limits before they are
decoded), PNG out (with the settings that reproduce the result in a text chunk)."""
from __future__ import annotations

import base64
import binascii
import io
import json
import re
import struct
import zlib
from typing import Any

import cv2
import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .. import processing as P

NOT_AN_IMAGE = "send PNG, JPEG, WebP, TIFF, BMP or GIF"
SETTINGS_KEY = "varedit"  # PNG text chunk that holds the settings JSON
_DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


class TooLarge(ValueError):
    """An image over the pixel limit (served as 413)."""


def b64decode(value: str, what: str) -> bytes:
    """Bytes of a base64 string (a ``data:...;base64,`` prefix and whitespace are allowed)."""
    s = _DATA_URL.sub("", value.strip(), count=1)
    s = "".join(s.split())
    if not s:
        raise ValueError(f"{what} is empty")
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64 (send a base64 PNG or JPEG, or use multipart)") from None


def check_size(data: bytes, what: str, max_pixels: int) -> tuple[int, int]:
    """The image's (width, height) from its header, refusing a non-image or one over ``max_pixels``
    before anything is decoded."""
    if not data:
        raise ValueError(f"{what} is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except UnidentifiedImageError:  # its message is a repr of the BytesIO, with a heap address
        raise ValueError(f"{what}: the upload is not an image ({NOT_AN_IMAGE})") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, DecompressionBombError, ...
        raise ValueError(f"{what} is not a readable image ({' '.join(str(e).split()) or type(e).__name__})") from None
    if w * h > max_pixels:
        raise TooLarge(f"{what} is {w}x{h} = {w * h / 1e6:.1f} MP, above this server's limit of "
                       f"{max_pixels / 1e6:.1f} MP")
    return w, h


def _unnamed(msg: str, what: str) -> str:
    """processing's messages name the file; an upload has no name."""
    return msg.replace(f"{what} '<bytes>':", f"{what}:").replace("'<bytes>': ", f"{what}: ").replace("'<bytes>'", what)


def load_image(data: bytes, max_pixels: int) -> P.LoadedImage:
    """Decode an uploaded image (any format Pillow reads; truncated files are refused)."""
    check_size(data, "image", max_pixels)
    try:
        return P.load_image(data, max_pixels=max_pixels)
    except ValueError as e:
        raise ValueError(_unnamed(str(e), "image")) from None


def load_mask(data: bytes, size_wh: tuple[int, int], max_pixels: int, **options: Any) -> np.ndarray:
    """Decode an uploaded mask (white = regenerate; a mask of another size than the image is refused,
    since a browser or script that sends one has lost track of which image it belongs to). ``options``:
    :func:`varedit.processing.load_mask`'s (``threshold``)."""
    w, h = check_size(data, "mask", max_pixels)
    if (w, h) != tuple(size_wh):
        raise ValueError(f"mask is {w}x{h} but the image is {size_wh[0]}x{size_wh[1]}")
    try:
        return P.load_mask(data, size_wh, on_size_mismatch="error", **options)
    except ValueError as e:
        raise ValueError(_unnamed(str(e), "mask")) from None


def encode_png(img: Any, settings: dict[str, Any] | None = None, *, compress_level: int = 3) -> bytes:
    """PNG bytes of an output (PIL image, or a 16-bit colour array from a 16-bit input), with the
    settings JSON in a text chunk."""
    if isinstance(img, np.ndarray):
        if img.dtype == np.uint16 and img.ndim == 3 and img.shape[2] in (3, 4):
            code = cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR
            ok, buf = cv2.imencode(".png", cv2.cvtColor(img, code), [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
            if not ok:  # pragma: no cover - OpenCV encodes any uint16 array
                raise RuntimeError("could not encode a 16-bit PNG")
            data = buf.tobytes()
            return data if settings is None else _with_text(data, SETTINGS_KEY, _settings_text(settings))
        img = P.raw_to_image(img)
    info = None
    if settings is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(SETTINGS_KEY, _settings_text(settings))
    buf = io.BytesIO()
    extra = {"icc_profile": img.info["icc_profile"]} if img.info.get("icc_profile") else {}
    img.save(buf, format="PNG", pnginfo=info, compress_level=compress_level, **extra)
    return buf.getvalue()


def _settings_text(settings: dict[str, Any]) -> str:
    return json.dumps(settings, separators=(",", ":"), default=str)


def _with_text(png: bytes, key: str, text: str) -> bytes:
    """``png`` with a tEXt chunk after its header chunk (OpenCV writes none)."""
    body = key.encode("latin-1") + b"\0" + text.encode("latin-1", "replace")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    end_of_header = 8 + 4 + 4 + 13 + 4  # signature, then IHDR: length, type, 13 bytes, CRC
    return png[:end_of_header] + chunk + png[end_of_header:]


def mask_png(mask: np.ndarray | None) -> bytes | None:
    """A bool mask as a black/white 8-bit PNG (white = regenerated)."""
    if mask is None:
        return None
    return encode_png(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L"), compress_level=6)


def preview_png(canvas: np.ndarray, max_side: int, max_candidates: int = 4) -> bytes:
    """The decoded canvases of a scale ((n, S, S, 3) in [0, 1]) side by side (at most
    ``max_candidates``), each at most ``max_side`` pixels, as PNG."""
    tiles = np.clip(np.asarray(canvas[:max_candidates], np.float32), 0, 1)
    strip = np.concatenate(list(tiles), axis=1)
    s = tiles.shape[1]
    if s > max_side:
        f = max_side / s
        strip = cv2.resize(strip, (round(strip.shape[1] * f), max_side), interpolation=cv2.INTER_AREA)
    u8 = (strip * 255 + 0.5).astype(np.uint8)
    return encode_png(Image.fromarray(u8, "RGB"), compress_level=1)


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")
