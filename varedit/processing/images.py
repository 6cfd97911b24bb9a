"""Image decoding and encoding: any input to a LoadedImage, and results back to the input's mode and bit depth."""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from typing import Any, Union

import cv2
import numpy as np
from PIL import Image, ImageOps

from ._common import (
    ImageError,
    Size,
    _color_channels,
    _full_scale,
    _one_line,
    check_regular_file,
    tensor_to_numpy,
)
from .blending import compose

logger = logging.getLogger(__name__)


#: Default upper bound for :func:`limit_pixels` / :func:`load_image` (100 megapixels).
DEFAULT_MAX_PIXELS: int = 100_000_000

ImageSource = Union[str, "os.PathLike[str]", bytes, Image.Image, np.ndarray, Any]


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """An input image, normalised for the model but with its original pixels kept.

    Attributes:
        rgb: ``(H, W, 3)`` float32 in ``[0, 1]``. Grayscale inputs are replicated to 3 channels.
        alpha: ``(H, W)`` float32 in ``[0, 1]`` for inputs with an alpha channel, else ``None``.
        mode: the original PIL mode (``"RGB"``, ``"RGBA"``, ``"L"``, ``"LA"``, ``"P"``,
            ``"I;16"``, ``"I"``, ...) or ``"numpy"`` for array input.
        bit_depth: 8 or 16. Float inputs report 8 (that is what PIL output will use); their
            ``raw`` array stays float32 and ``to_output(..., as_numpy=True)`` returns float32.
        size: ``(width, height)``.
        raw: the original pixel array after EXIF orientation, in its own domain: ``uint8``,
            ``uint16`` or ``float32``; shape ``(H, W)`` (gray), ``(H, W, 1)`` (gray numpy),
            ``(H, W, 2)`` (gray + alpha), ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA). Palette,
            CMYK, 1-bit etc. are stored converted (to RGB/RGBA or L). Treat it as read-only.
        source: file name for messages, or ``None`` for in-memory input.
        icc_profile: the embedded ICC profile bytes, if any (copied onto PIL outputs).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    mode: str
    bit_depth: int
    size: Size
    raw: np.ndarray
    source: str | None = None
    icc_profile: bytes | None = None

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    @property
    def is_gray(self) -> bool:
        """True when the original has a single colour channel (L, LA, I;16, 2-D arrays)."""
        return _color_channels(self.raw) == 1

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None


def limit_pixels(image_wh: Size, max_pixels: int | None = DEFAULT_MAX_PIXELS, what: str = "image") -> None:
    """Raise :class:`ImageError` if ``width * height`` exceeds ``max_pixels``.

    Use it before decoding or allocating anything proportional to the image (an input, an outpainted
    canvas, an upscaled output: ``what`` names it). ``max_pixels=None`` disables the check.
    Non-positive sizes are also rejected.
    """
    w, h = int(image_wh[0]), int(image_wh[1])
    if w <= 0 or h <= 0:
        raise ImageError(f"invalid {what} size {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(
            f"{what} is {w}x{h} = {w * h / 1e6:.1f} MP, above the limit of "
            f"{max_pixels / 1e6:.1f} MP; downscale it or tile it first, or raise max_pixels"
        )


def _png_bit_depth(fp: Any) -> int | None:
    """Bit depth from a PNG IHDR chunk (byte 24), or None if not a PNG."""
    try:
        pos = fp.tell()
        fp.seek(0)
        head = fp.read(26)
        fp.seek(pos)
    except Exception:  # pragma: no cover - unseekable streams
        return None
    if len(head) >= 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24]
    return None


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Numpy equivalent of PIL.ImageOps.exif_transpose for EXIF Orientation 1..8."""
    if orientation == 2:
        out = arr[:, ::-1]
    elif orientation == 3:
        out = arr[::-1, ::-1]
    elif orientation == 4:
        out = arr[::-1]
    elif orientation == 5:
        out = np.swapaxes(arr, 0, 1)
    elif orientation == 6:
        out = np.rot90(arr, -1)
    elif orientation == 7:
        out = np.swapaxes(arr, 0, 1)[::-1, ::-1]
    elif orientation == 8:
        out = np.rot90(arr, 1)
    else:
        return arr
    return np.ascontiguousarray(out)


def _read_16bit_color_png(data: bytes | str, orientation: int) -> np.ndarray | None:
    """Pillow reduces 16-bit RGB(A) PNGs to 8 bits; read those with OpenCV instead."""
    if isinstance(data, str):
        buf = np.fromfile(data, dtype=np.uint8)
    else:
        buf = np.frombuffer(data, dtype=np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return None
    if arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    else:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    return _apply_orientation(arr, orientation)


def _pil_to_raw(img: Image.Image) -> tuple[np.ndarray, int]:
    """Pixel array (after orientation) in its own domain, plus its bit depth."""
    mode = img.mode
    if mode in ("RGB", "RGBA", "L", "LA"):
        return np.array(img), 8
    if mode == "P" or mode == "PA":
        has_t = mode == "PA" or "transparency" in img.info
        return np.array(img.convert("RGBA" if has_t else "RGB")), 8
    if mode == "1":
        return np.array(img.convert("L")), 8
    if mode.startswith("I;16"):
        return np.array(img).astype(np.uint16), 16  # handles I;16B / I;16L byte orders
    if mode == "I":
        arr = np.array(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            logger.warning("32-bit integer image clipped to the 16-bit range 0..65535")
        return np.clip(arr, 0, 65535).astype(np.uint16), 16
    if mode == "F":
        return _check_float(np.array(img, dtype=np.float32), "mode F image"), 8
    if mode in ("RGBa", "La"):
        return np.array(img.convert(mode.upper())), 8
    if mode == "RGBX":
        return np.array(img.convert("RGB")), 8
    try:
        return np.array(img.convert("RGB")), 8  # CMYK, YCbCr, LAB, HSV, ...
    except Exception as exc:
        raise ImageError(f"unsupported image mode {mode!r}: {_one_line(exc)}") from exc


def _check_float(arr: np.ndarray, what: str) -> np.ndarray:
    arr = arr.astype(np.float32, copy=False)
    if arr.size == 0:
        return arr
    if not np.isfinite(arr).all():
        raise ImageError(f"{what} contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ImageError(
            f"{what} has float values in [{lo:.4g}, {hi:.4g}]; expected [0, 1] "
            "(divide 8-bit data by 255 or pass a uint8 array)"
        )
    return np.clip(arr, 0.0, 1.0) if (lo < 0 or hi > 1) else arr


def _numpy_to_raw(arr: np.ndarray) -> tuple[np.ndarray, int]:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise ImageError(f"image array must be HxW or HxWxC with C in 1..4, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"image array is empty (shape {arr.shape})")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255, 8
    if arr.dtype == np.uint8:
        return np.array(arr), 8
    if arr.dtype == np.uint16 or (arr.dtype.kind == "u" and arr.dtype.itemsize == 2):
        return np.array(arr, dtype=np.uint16), 16
    if arr.dtype.kind == "f":
        return np.array(_check_float(arr, "float image array"), dtype=np.float32), 8
    raise ImageError(
        f"unsupported image array dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]"
    )


def _raw_to_rgb_alpha(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    scale = np.float32(1.0 / _full_scale(raw.dtype))
    arr = raw.astype(np.float32) * scale if raw.dtype != np.float32 else raw
    if arr.ndim == 2:
        arr = arr[:, :, None]
    c = arr.shape[2]
    alpha = np.ascontiguousarray(arr[:, :, c - 1]) if c in (2, 4) else None
    color = arr[:, :, :1] if c in (1, 2) else arr[:, :, :3]
    rgb = np.repeat(color, 3, axis=2) if color.shape[2] == 1 else np.array(color)
    return np.ascontiguousarray(rgb, dtype=np.float32), alpha


def load_image(src: ImageSource, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Load an image from a path, bytes, a binary file object, a PIL image, a numpy array or a torch
    tensor (HxW or HxWxC values, as for arrays).

    EXIF orientation is applied (``PIL.ImageOps.exif_transpose``), so ``rgb`` and ``raw`` are
    upright. Supported: RGB, RGBA, L, LA, P/PA (converted to RGB or RGBA), 1, I;16 / I (16-bit
    grayscale), F, CMYK/YCbCr/... (converted to RGB), 16-bit RGB(A) PNG files (read through
    OpenCV because Pillow would reduce them to 8 bits), and numpy arrays of dtype uint8,
    uint16, bool or float (values in ``[0, 1]``) with shape HxW or HxWxC, C in 1..4 (arrays are
    taken as RGB order, not OpenCV's BGR).

    The size is checked against ``max_pixels`` (see :func:`limit_pixels`) before decoding.

    Raises:
        ImageError: the file is missing, unreadable, not an image, truncated, too large or of
            an unsupported format; the message is one line and names the file.
    """
    as_array = tensor_to_numpy(src)
    if as_array is not None:
        src = as_array
    if isinstance(src, np.ndarray):
        raw, depth = _numpy_to_raw(src)
        limit_pixels((raw.shape[1], raw.shape[0]), max_pixels)
        rgb, alpha = _raw_to_rgb_alpha(raw)
        return LoadedImage(rgb, alpha, "numpy", depth, (raw.shape[1], raw.shape[0]), raw)

    if isinstance(src, Image.Image):
        name = getattr(src, "filename", None) or None
        return _load_pil(src, name, None, max_pixels)

    if isinstance(src, (bytes, bytearray)):
        data: bytes | str = bytes(src)
        name = "<bytes>"
        opener: Any = io.BytesIO(data)
    elif isinstance(src, (str, os.PathLike)):
        data = os.fspath(src)
        name = data
        opener = data
        check_regular_file(data, "image", ImageError)
    elif hasattr(src, "read"):
        data = src.read()
        name = str(getattr(src, "name", "<stream>"))
        opener = io.BytesIO(data)
    else:
        raise TypeError(f"an image must be a path, bytes, a file object, a PIL image, a numpy array or a "
                        f"torch tensor, not {type(src).__name__}")

    try:
        with Image.open(opener) as img:
            limit_pixels(img.size, max_pixels)
            img.load()
            return _load_pil(img, name, data, max_pixels)
    except ImageError as exc:
        msg = str(exc)
        raise ImageError(msg if name in msg else f"{name!r}: {msg}") from exc
    except FileNotFoundError as exc:
        raise ImageError(f"cannot read image {name!r}: file not found") from exc
    except Exception as exc:  # PIL raises many types: UnidentifiedImageError, OSError, ...
        raise ImageError(f"cannot read image {name!r}: {_one_line(exc)}") from exc


def _load_pil(
    img: Image.Image, name: str | None, data: bytes | str | None, max_pixels: int | None
) -> LoadedImage:
    limit_pixels(img.size, max_pixels)
    mode = img.mode
    icc = img.info.get("icc_profile") or None
    try:
        orientation = int(img.getexif().get(0x0112, 1) or 1)
    except Exception:
        orientation = 1
    raw: np.ndarray | None = None
    depth = 8
    if data is not None and mode in ("RGB", "RGBA") and img.format == "PNG":
        fp = io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")
        with fp:
            is16 = _png_bit_depth(fp) == 16
        if is16:
            raw = _read_16bit_color_png(data, orientation)
            depth = 16 if raw is not None else 8
    if raw is None:
        upright = ImageOps.exif_transpose(img)
        raw, depth = _pil_to_raw(upright if upright is not None else img)
    rgb, alpha = _raw_to_rgb_alpha(raw)
    h, w = raw.shape[:2]
    logger.debug("loaded %s: mode=%s %dx%d %d-bit", name or "image", mode, w, h, depth)
    return LoadedImage(rgb, alpha, mode, depth, (w, h), raw, name, icc)


def original_array(like: LoadedImage) -> np.ndarray:
    """A writable copy of the original pixel array (see :attr:`LoadedImage.raw`)."""
    return np.array(like.raw)


def raw_to_image(raw: np.ndarray, like: LoadedImage | None = None) -> Image.Image:
    """Wrap a raw-domain array (as returned by :func:`compose`) into a PIL image.

    uint8: L / LA / RGB / RGBA. uint16 gray: ``I;16``. PIL has no 16-bit colour or 16-bit
    gray+alpha modes, so those (and float arrays) become 8-bit with a logged warning for the
    16-bit case; use ``to_output(..., as_numpy=True)`` or :func:`save_image` to keep 16 bits.
    The ICC profile of ``like`` is copied into ``image.info``.
    """
    arr = np.asarray(raw)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.dtype == np.uint16 and arr.ndim == 2:
        img = Image.fromarray(np.ascontiguousarray(arr))
    else:
        if arr.dtype == np.uint16:
            logger.warning(
                "PIL cannot hold 16-bit colour/alpha images; output reduced to 8 bits "
                "(use as_numpy=True or save_image to keep 16 bits)"
            )
        if arr.dtype != np.uint8:
            arr = np.clip(
                np.floor(arr.astype(np.float32) * (255.0 / _full_scale(arr.dtype)) + 0.5), 0, 255
            )
            arr = arr.astype(np.uint8)
        img = Image.fromarray(np.ascontiguousarray(arr))
    if like is not None and like.icc_profile:
        img.info["icc_profile"] = like.icc_profile
    return img


def to_output(
    rgb01: np.ndarray,
    like: LoadedImage,
    as_numpy: bool = False,
    *,
    weight: np.ndarray | None = None,
    edited_alpha: np.ndarray | None = None,
) -> Image.Image | np.ndarray:
    """Convert an edited RGB image back to the format of the original input.

    Grayscale inputs give ``L`` (or ``I;16`` for 16-bit), RGBA/LA inputs keep their original
    alpha, 16-bit stays 16-bit (as numpy; PIL has no 16-bit RGB mode, see :func:`raw_to_image`).
    Palette/CMYK/1-bit inputs come back as RGB(A)/L. With ``as_numpy`` the result has the same
    dtype and channel layout as ``like.raw``.

    ``weight`` (HxW, default all ones) and ``edited_alpha`` are passed to :func:`compose`, so
    pixels with weight 0 are bit-identical to the input. Even with the default weight, a
    ``like.rgb`` that was not changed converts back exactly.
    """
    if rgb01.shape[:2] != like.raw.shape[:2]:
        raise ValueError(
            f"edited image is {rgb01.shape[1]}x{rgb01.shape[0]} but the original is "
            f"{like.size[0]}x{like.size[1]}"
        )
    if weight is None:
        weight = np.ones(like.raw.shape[:2], dtype=np.float32)
    raw = compose(like.raw, rgb01, weight, edited_alpha=edited_alpha)
    return raw if as_numpy else raw_to_image(raw, like)


# formats that hold 16 bits per channel (PIL writes 16-bit gray, OpenCV 16-bit colour)
_SIXTEEN_BIT = {"PNG": ".png", "TIFF": ".tif"}
_NO_ALPHA = ("JPEG", "BMP")


def output_format(path: str | os.PathLike[str]) -> str:
    """The PIL format name for an output path's suffix (PNG when it has none), or ImageError."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if not suffix:
        return "PNG"
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ImageError(f"cannot write {suffix} images ({os.fspath(path)}): use .png, .jpg, .webp or .tif")
    return fmt


def _to_8bit(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    return np.clip(np.floor(arr.astype(np.float32) * (255.0 / _full_scale(arr.dtype)) + 0.5), 0, 255).astype(np.uint8)


def _png_with_icc(png: bytes, icc: bytes) -> bytes:
    """Insert an iCCP chunk after IHDR (OpenCV writes no colour profile; PNG allows one iCCP there)."""
    import struct
    import zlib

    body = b"ICC profile\x00\x00" + zlib.compress(icc)
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body) & 0xFFFFFFFF)
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def encode_image(image: Image.Image | np.ndarray, fmt: str = "PNG", icc_profile: bytes | None = None) -> bytes:
    """Encode a result (a PIL image, or a raw array as :func:`to_output` returns it) in ``fmt``.

    16-bit arrays stay 16-bit in PNG and TIFF (colour through OpenCV, which Pillow cannot write, gray
    through Pillow); formats that hold 8 bits (JPEG, WebP, BMP, ...) get a correct 8-bit conversion
    with a warning, and formats without alpha (JPEG, BMP) drop it with a warning.  The ICC profile is
    kept (``icc_profile``, else the PIL image's own).
    """
    if isinstance(image, Image.Image):
        icc_profile = icc_profile or image.info.get("icc_profile")
        arr: np.ndarray = np.array(image) if image.mode not in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV") \
            else np.array(image.convert("RGBA" if image.mode == "PA" else "RGB"))
        if image.mode.startswith("I;16"):
            arr = arr.astype(np.uint16)
    else:
        arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 2 and arr.dtype == np.uint16:  # gray + alpha: no 16-bit PIL mode
        arr = np.concatenate([np.repeat(arr[:, :, :1], 3, axis=2), arr[:, :, 1:]], axis=2)
    if arr.dtype == np.uint16 and fmt not in _SIXTEEN_BIT:
        logger.warning("%s holds 8 bits per channel: the 16-bit result is written at 8 bits (use .png or .tif "
                       "to keep 16)", fmt)
        arr = _to_8bit(arr)
    elif arr.dtype not in (np.uint8, np.uint16):
        arr = _to_8bit(arr)
    has_alpha = arr.ndim == 3 and arr.shape[2] in (2, 4)
    if has_alpha and fmt in _NO_ALPHA:
        logger.warning("%s holds no transparency: the alpha channel is dropped (use .png to keep it)", fmt)
        arr = arr[:, :, :-1] if arr.shape[2] == 4 else arr[:, :, 0]
    if arr.dtype == np.uint16 and arr.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if arr.shape[2] == 4 else cv2.COLOR_RGB2BGR
        ok, buf = cv2.imencode(_SIXTEEN_BIT[fmt], cv2.cvtColor(np.ascontiguousarray(arr), code))
        if not ok:
            raise ImageError(f"OpenCV cannot encode a 16-bit {fmt} image")
        data = buf.tobytes()
        if icc_profile and fmt == "PNG":
            data = _png_with_icc(data, icc_profile)
        elif icc_profile:
            logger.warning("the colour profile is not written into 16-bit %s files (use .png)", fmt)
        return data
    img = Image.fromarray(np.ascontiguousarray(arr))
    out = io.BytesIO()
    kwargs: dict[str, Any] = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "JPEG":
        kwargs["quality"] = 95
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def save_image(image: Image.Image | np.ndarray, path: str | os.PathLike[str], icc_profile: bytes | None = None
               ) -> None:
    """Write a PIL image or a raw array atomically (:func:`encode_image`; the format follows the suffix)."""
    from ..io import atomic_write_bytes
    atomic_write_bytes(path, encode_image(image, output_format(path), icc_profile))


@dataclass(frozen=True)
class ImageHeader:
    """What an image file is, from its header alone (nothing is decoded)."""

    path: str
    size: Size
    mode: str
    format: str | None
    bit_depth: int
    has_alpha: bool = False


def probe_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS,
                what: str = "image") -> ImageHeader:
    """Check that ``path`` is a readable image within the pixel limit from its header, without decoding
    it (milliseconds): argument checks before any model is loaded.  Raises :class:`ImageError`."""
    name = os.fspath(path)
    check_regular_file(name, what, ImageError)
    try:
        with Image.open(name) as img:
            size, mode, fmt = img.size, img.mode, img.format
            alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
            depth = 16 if mode.startswith("I;16") or mode == "I" else 8
            if fmt == "PNG" and mode in ("RGB", "RGBA"):
                with open(name, "rb") as f:
                    depth = 16 if _png_bit_depth(f) == 16 else 8
    except Exception as exc:  # PIL raises many types: UnidentifiedImageError, OSError, ...
        raise ImageError(f"cannot read {what} {name!r}: {_one_line(exc)}") from exc
    try:
        limit_pixels(size, max_pixels, what)
    except ImageError as exc:
        raise ImageError(f"{name!r}: {exc}") from None
    return ImageHeader(name, size, mode, fmt, depth, alpha)
