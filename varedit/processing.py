"""Torch-free pre- and post-processing for VAR editing tasks (inpaint, outpaint, edits).

This module is shared with the onnxruntime runtime, so it only depends on numpy, Pillow and
OpenCV (``opencv-python-headless``). It must never import torch.

Data flow::

    src image --load_image--> LoadedImage (rgb float32 in [0,1], alpha, raw pixels)
    src mask  --load_mask / box_mask / mask_from_alpha--> bool HxW (True = regenerate)
    plan_crop / plan_resize / plan_tiles --> Window(s): image region <-> square model canvas
    extract(window, rgb, mask) --> canvas rgb (model_size^2) + canvas mask   [model runs here]
    place(window, canvas_rgb, shape) / merge_windows --> edited rgb at image resolution
    feather(mask, radius, grow) --> weight HxW (1 in mask, 0 beyond the band)
    compose(loaded.raw, edited_rgb, weight) --> raw array (untouched pixels bit-identical)
    to_output / raw_to_image --> PIL.Image (or numpy) in the input's mode and bit depth

Conventions
-----------
* Sizes are ``(width, height)`` tuples (PIL order); array shapes are ``(height, width, ...)``.
* Masks are ``bool`` arrays of shape ``(H, W)``; ``True`` means *regenerate* and ``False``
  means *keep*. Mask files follow IOPaint / diffusers / ComfyUI: white (full scale) = regenerate.
* Colour values handed to and returned by the model side are float32 RGB in ``[0, 1]``.
* Pixels whose paste-back weight is exactly 0 are copied from the original raw array, so
  they are bit-identical to the input (same dtype, same channels, alpha untouched).
"""

from __future__ import annotations

import io
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Literal, Sequence, Union, get_args

import cv2
import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "ImageError",
    "MaskError",
    "LoadedImage",
    "Window",
    "DEFAULT_MAX_PIXELS",
    "load_image",
    "limit_pixels",
    "original_array",
    "compose",
    "to_output",
    "raw_to_image",
    "save_image",
    "load_mask",
    "box_mask",
    "mask_from_alpha",
    "mask_bbox",
    "plan_crop",
    "plan_resize",
    "plan_tiles",
    "extract",
    "place",
    "merge_windows",
    "latent_mask",
    "grow_mask",
    "feather",
    "extend_canvas",
    "extend_loaded",
    "prefill_hole",
    "harmonize",
]

logger = logging.getLogger(__name__)

#: Default upper bound for :func:`limit_pixels` / :func:`load_image` (100 megapixels).
DEFAULT_MAX_PIXELS: int = 100_000_000

#: ITU-R BT.601 luma weights, the same ones PIL uses for ``convert("L")``.
_LUMA = (0.299, 0.587, 0.114)

ImageSource = Union[str, "os.PathLike[str]", bytes, Image.Image, np.ndarray, Any]
MaskSource = Union[str, "os.PathLike[str]", bytes, Image.Image, np.ndarray, Any]
Size = tuple[int, int]
Box = tuple[int, int, int, int]
FillMethod = Literal["ns", "telea", "edge", "mean", "gray", "blur", "pushpull"]
FILL_METHODS: tuple[str, ...] = get_args(FillMethod)


class ImageError(ValueError):
    """An image cannot be read, is not an image, has an unsupported format or is too large."""


class MaskError(ValueError):
    """A mask cannot be read, is empty where it must not be, or does not fit the image."""


# --------------------------------------------------------------------------------------------
# Loading and output
# --------------------------------------------------------------------------------------------


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


def _color_channels(raw: np.ndarray) -> int:
    if raw.ndim == 2:
        return 1
    return 1 if raw.shape[2] in (1, 2) else 3


def _has_alpha_channel(raw: np.ndarray) -> bool:
    return raw.ndim == 3 and raw.shape[2] in (2, 4)


def _full_scale(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return 1.0


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def limit_pixels(image_wh: Size, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Raise :class:`ImageError` if ``width * height`` exceeds ``max_pixels``.

    Use it before decoding or allocating anything proportional to the image. ``max_pixels=None``
    disables the check. Non-positive sizes are also rejected.
    """
    w, h = int(image_wh[0]), int(image_wh[1])
    if w <= 0 or h <= 0:
        raise ImageError(f"invalid image size {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(
            f"image is {w}x{h} = {w * h / 1e6:.1f} MP, above the limit of "
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
        raise ImageError(
            f"image array must be HxW or HxWxC with C in 1..4, got shape {arr.shape}"
        )
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
    """Load an image from a path, bytes, a binary file object, a PIL image or a numpy array.

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
    elif hasattr(src, "read"):
        data = src.read()
        name = str(getattr(src, "name", "<stream>"))
        opener = io.BytesIO(data)
    else:
        raise ImageError(f"cannot load an image from {type(src).__name__}")

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


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * _LUMA[0] + rgb[..., 1] * _LUMA[1] + rgb[..., 2] * _LUMA[2]


def compose(
    raw_original: np.ndarray,
    edited_rgb01: np.ndarray,
    weight_hw: np.ndarray,
    *,
    edited_alpha: np.ndarray | None = None,
) -> np.ndarray:
    """Paste edited pixels back into the original, in the original's pixel domain.

    ``out = original * (1 - w) + quantise(edited) * w`` per pixel, computed only where
    ``w > 0``; every pixel with ``w == 0`` is copied from ``raw_original`` (bit-identical, no
    float round trip) and ``w == 1`` gives exactly the quantised edited value.

    Args:
        raw_original: the original array (``LoadedImage.raw``): uint8, uint16 or float, shape
            HxW / HxWx1 / HxWx2 / HxWx3 / HxWx4.
        edited_rgb01: HxWx3 float RGB in ``[0, 1]`` (values are clipped), or HxW gray. For a
            grayscale original the RGB is converted to BT.601 luminance (as PIL's "L").
        weight_hw: HxW weights in ``[0, 1]`` (float or bool), e.g. from :func:`feather`.
        edited_alpha: optional HxW alpha in ``[0, 1]`` blended with the same weight. By default
            the original alpha channel is kept unchanged everywhere (e.g. pass ones to make
            filled transparent holes opaque).

    Returns:
        A new array of the same shape and dtype as ``raw_original``.
    """
    raw = np.asarray(raw_original)
    h, w = raw.shape[:2]
    weight = np.asarray(weight_hw)
    if weight.shape != (h, w):
        raise ValueError(f"weight shape {weight.shape} does not match image shape {(h, w)}")
    edited = np.asarray(edited_rgb01)
    if edited.shape[:2] != (h, w):
        raise ValueError(f"edited shape {edited.shape} does not match image shape {(h, w)}")
    if weight.dtype != np.bool_:
        weight = weight.astype(np.float32, copy=False)
        if weight.size and not ((weight >= 0) & (weight <= 1)).all():
            raise ValueError("weight values must be in [0, 1] (NaN not allowed)")
    out = np.array(raw)
    sel = weight > 0 if weight.dtype != np.bool_ else weight
    if not sel.any():
        return out
    wv = weight[sel].astype(np.float32)[:, None]

    n_color = _color_channels(raw)
    e = edited[sel].astype(np.float32)
    if e.ndim == 1:
        e = e[:, None]
    if e.shape[1] == 1 and n_color == 3:
        e = np.repeat(e, 3, axis=1)
    elif e.shape[1] == 3 and n_color == 1:
        e = _luma(e)[:, None]
    elif e.shape[1] != n_color:
        raise ValueError(f"edited image has {e.shape[1]} channels; expected 3 (RGB) or 1")
    e = np.clip(e, 0.0, 1.0)

    scale = _full_scale(raw.dtype)
    flat = out[sel] if out.ndim == 3 else out[sel][:, None]
    orig_c = flat[:, :n_color].astype(np.float32)
    mixed = orig_c * (1.0 - wv) + (e * scale) * wv
    if raw.dtype.kind in "ui":
        mixed = np.clip(np.floor(mixed + 0.5), 0, scale)
    flat = flat.copy()
    flat[:, :n_color] = mixed.astype(raw.dtype)
    if edited_alpha is not None and _has_alpha_channel(raw):
        a = np.clip(np.asarray(edited_alpha, dtype=np.float32)[sel], 0, 1)[:, None] * scale
        mixed_a = flat[:, -1:].astype(np.float32) * (1.0 - wv) + a * wv
        if raw.dtype.kind in "ui":
            mixed_a = np.clip(np.floor(mixed_a + 0.5), 0, scale)
        flat[:, -1:] = mixed_a.astype(raw.dtype)
    out[sel] = flat if out.ndim == 3 else flat[:, 0]
    return out


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
            arr = np.clip(np.floor(arr.astype(np.float32) * (255.0 / _full_scale(arr.dtype)) + 0.5), 0, 255)
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


def save_image(image: Image.Image | np.ndarray, path: str | os.PathLike[str]) -> None:
    """Save a PIL image or a raw array. 16-bit colour arrays (HxWx3/4 uint16, RGB order) are
    written with OpenCV (use .png or .tif) so they keep 16 bits; everything else goes to PIL."""
    path = os.fspath(path)
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint16 and image.ndim == 3 and image.shape[2] in (3, 4):
            code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
            if not cv2.imwrite(path, cv2.cvtColor(image, code)):
                raise ImageError(f"cannot write 16-bit image {path!r} (use .png or .tif)")
            return
        image = raw_to_image(image)
    image.save(path, **({"icc_profile": image.info["icc_profile"]} if image.info.get("icc_profile") else {}))


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


def _mask_fraction(arr: np.ndarray) -> np.ndarray:
    """Map a mask array to float fraction of full scale, HxWxC (C >= 1)."""
    if arr.dtype == np.bool_:
        f = arr.astype(np.float32)
    elif arr.dtype == np.uint8:
        f = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        f = arr.astype(np.float32) / 65535.0
    elif arr.dtype.kind == "f":
        f = arr.astype(np.float32)
        if f.size and (not np.isfinite(f).all() or f.min() < 0 or f.max() > 1):
            raise MaskError("float mask values must be finite and in [0, 1]")
    elif arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise MaskError(f"integer mask values out of range for dtype {arr.dtype}")
        full = 255.0 if (arr.size == 0 or arr.max() <= 255) else 65535.0
        f = arr.astype(np.float32) / full
    else:
        raise MaskError(f"unsupported mask dtype {arr.dtype}")
    return f if f.ndim == 3 else f[:, :, None]


def _mask_source_to_array(src: MaskSource) -> np.ndarray:
    if isinstance(src, np.ndarray):
        return src
    if isinstance(src, Image.Image):
        img = src
        name = getattr(src, "filename", None) or "<PIL image>"
    else:
        name = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "<bytes>"
        opener = io.BytesIO(bytes(src)) if isinstance(src, (bytes, bytearray)) else name
        try:
            with Image.open(opener) as im:
                im.load()
                img = im.copy()
        except FileNotFoundError as exc:
            raise MaskError(f"cannot read mask {name!r}: file not found") from exc
        except Exception as exc:
            raise MaskError(f"cannot read mask {name!r}: {_one_line(exc)}") from exc
    img = ImageOps.exif_transpose(img) or img
    mode = img.mode
    if mode == "1":
        return np.array(img, dtype=bool)
    if mode in ("P", "PA"):
        img = img.convert("RGBA" if (mode == "PA" or "transparency" in img.info) else "RGB")
    elif mode == "I":
        return np.clip(np.array(img), 0, 65535).astype(np.uint16)
    elif mode == "F":
        return np.array(img, dtype=np.float32)
    elif mode not in ("L", "LA", "RGB", "RGBA") and not mode.startswith("I;16"):
        img = img.convert("RGB")
    arr = np.array(img)
    return arr.astype(np.uint16) if mode.startswith("I;16") else arr


def load_mask(
    src: MaskSource,
    size_wh: Size | None,
    *,
    invert: bool = False,
    threshold: float = 0.5,
    on_size_mismatch: Literal["resize", "error"] = "resize",
) -> np.ndarray:
    """Load a mask as a bool ``(H, W)`` array where ``True`` = regenerate.

    Polarity: white / full scale = regenerate (IOPaint, diffusers, ComfyUI); ``invert=True``
    flips the result after thresholding.

    Value: each pixel's value is taken as a fraction of full scale (uint8/255, uint16/65535,
    float as is; bool as is) and a pixel is regenerated when ``value > threshold``.
    For colour masks the value is the **maximum over the colour channels** (so a pure red or
    blue brush stroke counts as painted; for black/white masks this equals the luminance).

    Alpha: for RGBA / LA masks, if the alpha channel is fully opaque everywhere the colour
    channels decide as above. Otherwise the mask is a painted layer: ``alpha > threshold`` =
    regenerate (opaque strokes), transparent (alpha 0) = keep, and colours are ignored.

    EXIF orientation of mask files is applied, like :func:`load_image`.

    Size: ``size_wh`` is the image's ``(width, height)`` (``None`` skips the check). A
    mismatching mask is resized with nearest neighbour and a ``logging`` warning when
    ``on_size_mismatch="resize"``, or raises :class:`MaskError` with ``"error"``.
    """
    if on_size_mismatch not in ("resize", "error"):
        raise ValueError(f"on_size_mismatch must be 'resize' or 'error', got {on_size_mismatch!r}")
    if not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    arr = _mask_source_to_array(src)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise MaskError(f"mask must be HxW or HxWxC with C in 1..4, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MaskError(f"mask is empty (shape {arr.shape})")

    if arr.dtype == np.bool_ and arr.ndim == 2:
        mask = arr.copy()
    else:
        f = _mask_fraction(arr)
        c = f.shape[2]
        if c in (2, 4):
            alpha = f[:, :, -1]
            if alpha.min() >= 1.0:
                value = f[:, :, : c - 1].max(axis=2)
            else:
                value = alpha
        else:
            value = f.max(axis=2)
        mask = value > threshold

    h, w = mask.shape
    if size_wh is not None:
        tw, th = int(size_wh[0]), int(size_wh[1])
        if (w, h) != (tw, th):
            if on_size_mismatch == "error":
                raise MaskError(f"mask is {w}x{h} but the image is {tw}x{th}")
            note = ""
            if abs(w / h - tw / th) > 0.01 * (tw / th):
                note = " (aspect ratio differs; is the mask for this image?)"
            logger.warning(
                "mask is %dx%d but the image is %dx%d; resizing the mask with nearest "
                "neighbour%s", w, h, tw, th, note
            )
            mask = cv2.resize(mask.astype(np.uint8), (tw, th), interpolation=cv2.INTER_NEAREST) > 0
    return ~mask if invert else mask


def _is_float_number(v: Any) -> bool:
    return isinstance(v, (float, np.floating))


def box_mask(size_wh: Size, box: Sequence[float]) -> np.ndarray:
    """Rectangular mask (True inside) for ``box = (x0, y0, x1, y1)``.

    Ints (Python or numpy) are pixels with ``x1``/``y1`` exclusive. If **any** value is a float,
    all four are fractions of the width/height in ``[0, 1]`` (x0/y0 are floored, x1/y1 are
    ceiled to whole pixels). A box partly outside the image is clipped.

    Raises:
        MaskError: wrong length, bools, fractions outside ``[0, 1]``, ``x1 <= x0`` or
            ``y1 <= y0``, or a box that does not overlap the image at all.
    """
    w, h = int(size_wh[0]), int(size_wh[1])
    if w <= 0 or h <= 0:
        raise MaskError(f"invalid image size {w}x{h}")
    vals = list(box)
    if len(vals) != 4:
        raise MaskError(f"box must be (x0, y0, x1, y1), got {box!r}")
    if any(isinstance(v, (bool, np.bool_)) for v in vals) or not all(
        isinstance(v, (int, np.integer)) or _is_float_number(v) for v in vals
    ):
        raise MaskError(f"box values must be ints (pixels) or floats (fractions), got {box!r}")
    if any(_is_float_number(v) for v in vals):
        fv = [float(v) for v in vals]
        if not all(0.0 <= v <= 1.0 for v in fv):
            raise MaskError(
                f"fractional box {tuple(fv)} must have values in [0, 1]; pass ints for pixels"
            )
        x0, x1 = math.floor(fv[0] * w), math.ceil(fv[2] * w)
        y0, y1 = math.floor(fv[1] * h), math.ceil(fv[3] * h)
        if fv[2] <= fv[0] or fv[3] <= fv[1]:
            raise MaskError(f"box {tuple(fv)} is empty (need x1 > x0 and y1 > y0)")
    else:
        x0, y0, x1, y1 = (int(v) for v in vals)
        if x1 <= x0 or y1 <= y0:
            raise MaskError(f"box {(x0, y0, x1, y1)} is empty (need x1 > x0 and y1 > y0)")
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 <= cx0 or cy1 <= cy0:
        raise MaskError(f"box {(x0, y0, x1, y1)} lies outside the {w}x{h} image")
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        logger.debug("box %s clipped to %s", (x0, y0, x1, y1), (cx0, cy0, cx1, cy1))
    mask = np.zeros((h, w), dtype=bool)
    mask[cy0:cy1, cx0:cx1] = True
    return mask


def mask_from_alpha(loaded: LoadedImage, threshold: float = 0.5) -> np.ndarray:
    """Regenerate mask from transparency: ``alpha < threshold`` (default 0.5) = True.

    Raises:
        MaskError: the image has no alpha channel.
    """
    if loaded.alpha is None:
        name = f" {loaded.source!r}" if loaded.source else ""
        raise MaskError(f"image{name} has no alpha channel (mode {loaded.mode})")
    return loaded.alpha < threshold


def mask_bbox(mask: np.ndarray) -> Box | None:
    """Bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of the True pixels, or None."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _check_mask(mask: np.ndarray, hw: tuple[int, int], what: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != hw:
        raise MaskError(f"{what} shape {m.shape} does not match image shape {hw}")
    return m.astype(bool, copy=False)


# --------------------------------------------------------------------------------------------
# Size strategies
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A square region of the image mapped onto the model's square canvas.

    Attributes:
        box: ``(x0, y0, x1, y1)`` in image pixels, exclusive ends, always square
            (``x1 - x0 == y1 - y0``). It may extend beyond the image; that part (``pad``) is
            filled by edge replication in :func:`extract` and discarded by :func:`place`.
        model_size: side of the model canvas in pixels (multiple of 16; latent grid is
            ``model_size // 16``).
        image_wh: ``(width, height)`` of the image this window belongs to.
        kind: ``"crop"``, ``"resize"`` or ``"tile"``.
    """

    box: Box
    model_size: int
    image_wh: Size
    kind: str = "crop"

    @property
    def side(self) -> int:
        """Side of the source square in image pixels."""
        return self.box[2] - self.box[0]

    @property
    def scale(self) -> float:
        """Canvas pixels per image pixel (``model_size / side``; 1.0 for tiles)."""
        return self.model_size / self.side

    @property
    def clip_box(self) -> Box:
        """``box`` intersected with the image: the region :func:`place` writes to."""
        w, h = self.image_wh
        x0, y0, x1, y1 = self.box
        return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)

    @property
    def pad(self) -> tuple[int, int, int, int]:
        """Image pixels of ``box`` outside the image: ``(left, top, right, bottom)``."""
        w, h = self.image_wh
        x0, y0, x1, y1 = self.box
        return max(-x0, 0), max(-y0, 0), max(x1 - w, 0), max(y1 - h, 0)

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices of ``clip_box`` for indexing image arrays."""
        x0, y0, x1, y1 = self.clip_box
        return slice(y0, y1), slice(x0, x1)

    @property
    def latent_size(self) -> int:
        return self.model_size // 16


def _check_model_size(model_size: int) -> int:
    ms = int(model_size)
    if ms <= 0 or ms % 16 or ms != model_size:
        raise ValueError(f"model_size must be a positive multiple of 16, got {model_size}")
    return ms


def _check_wh(image_wh: Size) -> tuple[int, int]:
    w, h = int(image_wh[0]), int(image_wh[1])
    if w <= 0 or h <= 0:
        raise ValueError(f"invalid image size {w}x{h}")
    return w, h


def _place_axis(lo: int, hi: int, side: int, dim: int) -> int:
    """Start of a ``side``-long interval containing [lo, hi), centred on it, kept in [0, dim]
    when it fits; centred on the image (padding both ends) when it does not."""
    if side >= dim:
        return -((side - dim) // 2)
    start = (lo + hi) // 2 - side // 2
    return min(max(start, 0), dim - side)


def plan_crop(
    mask: np.ndarray,
    image_wh: Size,
    model_size: int,
    margin: float = 0.5,
    *,
    min_margin: int = 16,
    min_side: int | None = None,
) -> Window:
    """Square crop around the mask's bounding box with context, for ``model_size`` canvases.

    The side is ``bbox_side + 2 * max(margin * bbox_side, min_margin)`` (``bbox_side`` is the
    larger bbox dimension), at least ``min_side`` (default ``model_size``, so small regions are
    processed at native resolution rather than upscaled, when the image is large enough), and
    at most the image's longer side. The square is centred on the bbox and shifted to stay
    inside the image; along an axis where the image is shorter than the side it is centred on
    the image and the excess is edge-replicated padding. The crop is then resized to
    ``model_size`` by :func:`extract`.

    Raises:
        MaskError: the mask is empty or does not match ``image_wh``.
    """
    ms = _check_model_size(model_size)
    w, h = _check_wh(image_wh)
    m = _check_mask(mask, (h, w))
    if margin < 0 or min_margin < 0:
        raise ValueError("margin and min_margin must be >= 0")
    bb = mask_bbox(m)
    if bb is None:
        raise MaskError("mask is empty: nothing to regenerate")
    bx0, by0, bx1, by1 = bb
    bside = max(bx1 - bx0, by1 - by0)
    side = int(math.ceil(bside + 2 * max(margin * bside, min_margin)))
    lower = ms if min_side is None else int(min_side)
    side = max(side, min(lower, max(w, h)))
    side = max(min(side, max(w, h)), bside, 1)
    x0 = _place_axis(bx0, bx1, side, w)
    y0 = _place_axis(by0, by1, side, h)
    win = Window((x0, y0, x0 + side, y0 + side), ms, (w, h), "crop")
    logger.debug("crop plan for bbox %s: %s", bb, win)
    return win


def plan_resize(image_wh: Size, model_size: int) -> Window:
    """The whole image letterboxed into the square: aspect ratio kept, the shorter axis padded
    equally on both sides by edge replication (the padding is dropped again by :func:`place`)."""
    ms = _check_model_size(model_size)
    w, h = _check_wh(image_wh)
    side = max(w, h)
    x0, y0 = -((side - w) // 2), -((side - h) // 2)
    return Window((x0, y0, x0 + side, y0 + side), ms, (w, h), "resize")


def _tile_starts(dim: int, size: int, stride: int) -> list[int]:
    if dim <= size:
        return [-((size - dim) // 2)]
    n = math.ceil((dim - size) / stride) + 1
    span = dim - size
    return sorted({round(i * span / (n - 1)) for i in range(n)})


def plan_tiles(
    image_wh: Size,
    model_size: int,
    overlap: float = 0.5,
    mask: np.ndarray | None = None,
) -> list[Window]:
    """Tiles of ``model_size`` at native resolution (scale 1) covering the whole image.

    Neighbouring tiles overlap by at least ``overlap`` of the tile side (tiles are spread
    evenly, the last one flush with the image edge). An image axis shorter than a tile gets one
    tile centred on it with edge-replicated padding. With ``mask``, only tiles whose in-image
    region contains a True pixel are returned (possibly none). Order is row-major.
    """
    ms = _check_model_size(model_size)
    w, h = _check_wh(image_wh)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(1, int(math.floor(ms * (1.0 - overlap))))
    m = None if mask is None else _check_mask(mask, (h, w))
    tiles: list[Window] = []
    for y0 in _tile_starts(h, ms, stride):
        for x0 in _tile_starts(w, ms, stride):
            win = Window((x0, y0, x0 + ms, y0 + ms), ms, (w, h), "tile")
            if m is not None and not m[win.slices].any():
                continue
            tiles.append(win)
    return tiles


def _resize(arr: np.ndarray, size: int, src_side: int) -> np.ndarray:
    if size == src_side:
        return arr
    interp = cv2.INTER_AREA if size < src_side else cv2.INTER_CUBIC
    out = cv2.resize(arr, (size, size), interpolation=interp)
    if out.ndim == 2 and arr.ndim == 3:
        out = out[:, :, None]
    return out


def extract(
    window: Window, rgb01: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Cut ``window`` out of the image and resize it to the model canvas.

    Returns ``(canvas_rgb, canvas_mask)``: float32 ``(S, S, 3)`` in ``[0, 1]`` and bool
    ``(S, S)`` (``None`` if ``mask`` is None), ``S = window.model_size``. Outside the image the
    RGB is edge-replicated and the mask is False. Downscaling uses INTER_AREA, upscaling
    INTER_CUBIC (clipped). The mask is resized conservatively: when downscaling, a canvas pixel
    is True if any covered image pixel is True; when upscaling, nearest neighbour.
    """
    w, h = window.image_wh
    if rgb01.shape[:2] != (h, w):
        raise ValueError(f"image shape {rgb01.shape[:2]} does not match window image {(h, w)}")
    ys, xs = window.slices
    left, top, right, bottom = window.pad
    region = np.ascontiguousarray(rgb01[ys, xs], dtype=np.float32)
    if any(window.pad):
        region = cv2.copyMakeBorder(region, top, bottom, left, right, cv2.BORDER_REPLICATE)
    canvas = _resize(region, window.model_size, window.side)
    canvas = np.clip(canvas, 0.0, 1.0).astype(np.float32, copy=False)
    canvas = np.ascontiguousarray(canvas)

    cmask = None
    if mask is not None:
        m = _check_mask(mask, (h, w)).astype(np.uint8)[ys, xs]
        if any(window.pad):
            m = cv2.copyMakeBorder(m, top, bottom, left, right, cv2.BORDER_CONSTANT, value=0)
        s, side = window.model_size, window.side
        if s == side:
            cmask = m > 0
        elif s < side:
            cmask = cv2.resize(m.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA) > 0
        else:
            cmask = cv2.resize(m, (s, s), interpolation=cv2.INTER_NEAREST) > 0
    return canvas, cmask


def _taper(window: Window, ramp: int, eps: float = 1e-3) -> np.ndarray:
    """Separable weights falling linearly towards tile edges that lie inside the image."""
    w, h = window.image_wh
    x0, y0, x1, y1 = window.clip_box

    def axis(lo: int, hi: int, dim: int) -> np.ndarray:
        n = hi - lo
        idx = np.arange(n, dtype=np.float32)
        d_lo = idx + 0.5 if lo > 0 else np.full(n, np.inf, np.float32)
        d_hi = (n - idx - 0.5) if hi < dim else np.full(n, np.inf, np.float32)
        return np.clip(np.minimum(d_lo, d_hi) / max(ramp, 1), eps, 1.0).astype(np.float32)

    return axis(y0, y1, h)[:, None] * axis(x0, x1, w)[None, :]


def place(
    window: Window,
    canvas_rgb: np.ndarray,
    into_shape: Sequence[int],
    *,
    taper: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Map a model canvas back to image resolution (inverse of :func:`extract`).

    Returns ``(rgb, weight)`` for the window's in-image region only (``window.clip_box``;
    write them with ``out[window.slices]``): float32 ``(h, w, 3)`` clipped to ``[0, 1]`` and a
    float32 ``(h, w)`` coverage weight. Padding is dropped. The weight is 1 everywhere, or,
    with ``taper`` (default: True for ``kind == "tile"``), ramps down linearly over
    ``model_size // 4`` pixels towards tile edges that lie inside the image (never to 0), so
    overlapping tiles blend smoothly in :func:`merge_windows`. Upscaling uses INTER_CUBIC,
    downscaling INTER_AREA; at scale 1 the canvas is copied exactly.

    ``into_shape`` is the full image shape ``(H, W[, C])``, checked against the window.
    """
    w, h = window.image_wh
    if tuple(into_shape[:2]) != (h, w):
        raise ValueError(f"into_shape {tuple(into_shape)} does not match window image {(h, w)}")
    s = window.model_size
    if canvas_rgb.shape[:2] != (s, s):
        raise ValueError(f"canvas shape {canvas_rgb.shape} does not match model_size {s}")
    side = window.side
    canvas = np.asarray(canvas_rgb, dtype=np.float32)
    full = canvas if side == s else cv2.resize(
        canvas, (side, side), interpolation=cv2.INTER_AREA if side < s else cv2.INTER_CUBIC
    )
    left, top, _, _ = window.pad
    cx0, cy0, cx1, cy1 = window.clip_box
    ox, oy = left, top
    region = full[oy : oy + (cy1 - cy0), ox : ox + (cx1 - cx0)]
    region = np.clip(region, 0.0, 1.0).astype(np.float32)
    if taper is None:
        taper = window.kind == "tile"
    if taper:
        weight = _taper(window, s // 4)
    else:
        weight = np.ones(region.shape[:2], dtype=np.float32)
    return region, weight


def merge_windows(
    windows: Sequence[Window],
    canvases: Sequence[np.ndarray],
    image_shape: Sequence[int],
    *,
    taper: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Place several canvases and blend them by their :func:`place` weights.

    Returns ``(rgb, covered)``: float32 ``(H, W, 3)`` weighted average (0 where no window
    covers) and bool ``(H, W)`` coverage. Use e.g.
    ``compose(raw, rgb, feather(mask, r) * covered)``.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    if len(windows) != len(canvases):
        raise ValueError("windows and canvases must have the same length")
    acc = np.zeros((h, w, 3), dtype=np.float32)
    wsum = np.zeros((h, w), dtype=np.float32)
    for win, canvas in zip(windows, canvases):
        rgb, wt = place(win, canvas, (h, w), taper=taper)
        sl = win.slices
        acc[sl] += rgb * wt[:, :, None]
        wsum[sl] += wt
    covered = wsum > 0
    acc[covered] /= wsum[covered][:, None]
    return acc, covered


def latent_mask(canvas_mask: np.ndarray, patch: int = 16) -> np.ndarray:
    """Reduce an ``(S, S)`` canvas mask to the model's latent grid ``(S/patch, S/patch)``:
    a latent cell is True if any pixel in its ``patch x patch`` block is True."""
    m = np.asarray(canvas_mask, dtype=bool)
    hs, ws = m.shape
    if hs % patch or ws % patch:
        raise ValueError(f"mask shape {m.shape} is not a multiple of patch {patch}")
    return m.reshape(hs // patch, patch, ws // patch, patch).any(axis=(1, 3))


# --------------------------------------------------------------------------------------------
# Paste-back
# --------------------------------------------------------------------------------------------


def _distance_outside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel (0 on the mask)."""
    src = np.where(mask, 0, 1).astype(np.uint8)
    return cv2.distanceTransform(src, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def grow_mask(mask: np.ndarray, pixels: float) -> np.ndarray:
    """Dilate ``mask`` by ``pixels`` (Euclidean disc: every pixel within distance ``pixels`` of
    a True pixel becomes True). ``pixels=0`` returns a copy."""
    if pixels < 0:
        raise ValueError(f"pixels must be >= 0, got {pixels}")
    m = np.asarray(mask, dtype=bool)
    if pixels == 0 or not m.any():
        return m.copy()
    return _distance_outside(m) <= pixels


def feather(mask: np.ndarray, radius: float, grow: float = 0) -> np.ndarray:
    """Paste-back weight from a regenerate mask.

    Let ``d`` be the Euclidean distance to the nearest mask pixel. The weight is exactly 1 for
    ``d <= grow`` (the mask and its grown ring), falls smoothly (smoothstep) to exactly 0 at
    ``d = grow + radius``, and is exactly 0 beyond, so with :func:`compose` every pixel farther
    than ``grow + radius`` from the mask is bit-identical to the input. ``radius=0`` gives a
    hard paste-back of the grown mask.

    Returns float32 ``(H, W)`` in ``[0, 1]``.
    """
    if radius < 0 or grow < 0:
        raise ValueError(f"radius and grow must be >= 0, got radius={radius}, grow={grow}")
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return np.zeros(m.shape, dtype=np.float32)
    d = _distance_outside(m)
    if radius == 0:
        return (d <= grow).astype(np.float32)
    t = np.clip((d - grow) / float(radius), 0.0, 1.0)
    weight = 1.0 - t * t * (3.0 - 2.0 * t)
    weight = np.where(d <= grow, 1.0, np.where(d >= grow + radius, 0.0, weight))
    weight[m] = 1.0
    return weight.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Hole filling and outpainting canvases
# --------------------------------------------------------------------------------------------


def _nearest_fill(rgb: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Every pixel takes the value of its (approximately) nearest known pixel."""
    src = np.where(known, 0, 1).astype(np.uint8)
    _, labels = cv2.distanceTransformWithLabels(
        src, cv2.DIST_L2, cv2.DIST_MASK_5, labelType=cv2.DIST_LABEL_PIXEL
    )
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    flat_known = np.flatnonzero(known)
    lut[labels.ravel()[flat_known]] = flat_known
    return rgb.reshape(-1, rgb.shape[-1])[lut[labels.ravel()]].reshape(rgb.shape)


def _big_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur that stays fast for large sigma by working on a downscaled copy."""
    h, w = img.shape[:2]
    factor = max(1, int(sigma // 4))
    factor = min(factor, max(1, min(h, w) // 2))
    if factor > 1:
        small = cv2.resize(img, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        out = cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return out.reshape(img.shape)


def _push_pull(rgb: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Push-pull (Gortler et al. 1996): average known pixels down a pyramid with premultiplied
    weights clamped to 1, then fill holes on the way up from the coarser level."""
    colors = [rgb.astype(np.float32)]
    weights = [known.astype(np.float32)]
    premult = colors[0] * weights[0][:, :, None]
    while max(weights[-1].shape) > 1:
        h, w = weights[-1].shape
        nh, nw = max(1, (h + 1) // 2), max(1, (w + 1) // 2)
        wsum = cv2.resize(weights[-1], (nw, nh), interpolation=cv2.INTER_AREA) * (h * w / (nh * nw))
        psum = cv2.resize(premult, (nw, nh), interpolation=cv2.INTER_AREA).reshape(nh, nw, -1) * (
            h * w / (nh * nw)
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            col = np.where(wsum[:, :, None] > 1e-8, psum / np.maximum(wsum, 1e-8)[:, :, None], 0.0)
        wcl = np.minimum(wsum, 1.0).astype(np.float32)
        colors.append(col.astype(np.float32))
        weights.append(wcl)
        premult = colors[-1] * wcl[:, :, None]
    filled = colors[-1]
    for col, wt in zip(reversed(colors[:-1]), reversed(weights[:-1])):
        h, w = wt.shape
        up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
        filled = col * wt[:, :, None] + up * (1.0 - wt[:, :, None])
    return filled


def prefill_hole(
    rgb01: np.ndarray,
    mask: np.ndarray,
    method: FillMethod = "ns",
) -> np.ndarray:
    """Fill the hole (``mask`` True) using only known pixels; known pixels are copied exactly.

    Hole pixels are never read (their values cannot influence the result). Methods:

    * ``"ns"`` (default): OpenCV's Navier-Stokes inpainting (``cv2.inpaint``), which carries edges
      and colour regions from the rim into the hole along isophotes: an object cut by the hole is
      continued, where a membrane would wash it into the background.
    * ``"telea"``: OpenCV's fast-marching inpainting (Telea), similar, slightly sharper and noisier.
    * ``"pushpull"``: push-pull pyramid, a smooth membrane-like interpolation of the surrounding colours.
    * ``"edge"``: nearest known pixel.
    * ``"blur"``: nearest known pixel, then a Gaussian blur with sigma about half the hole's
      thickness (a soft extension).
    * ``"mean"``: mean colour of the known pixels.
    * ``"gray"``: 0.5 gray.

    An all-hole input is filled with 0.5 gray. Returns float32 ``(H, W, 3)``.
    """
    if method not in FILL_METHODS:
        raise ValueError(f"unknown fill method {method!r}; use {', '.join(FILL_METHODS)}")
    rgb = np.asarray(rgb01, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb01 must be HxWx3, got shape {rgb.shape}")
    hole = _check_mask(mask, rgb.shape[:2])
    out = np.array(rgb)
    if not hole.any():
        return out
    known = ~hole
    if not known.any() or method == "gray":
        out[hole] = 0.5
        return out
    safe = np.where(known[:, :, None], rgb, np.float32(0.0))  # hole pixels are never read
    if method in ("ns", "telea"):
        fill = _cv_inpaint(safe, hole, cv2.INPAINT_NS if method == "ns" else cv2.INPAINT_TELEA)
    elif method == "mean":
        fill = np.broadcast_to(safe[known].mean(axis=0), rgb.shape)
    elif method == "edge":
        fill = _nearest_fill(safe, known)
    elif method == "blur":
        near = _nearest_fill(safe, known)
        thickness = float(_distance_outside(known).max())
        fill = _big_blur(near, max(1.0, thickness / 2.0))
    else:
        fill = _push_pull(safe, known)
    out[hole] = np.clip(fill[hole], 0.0, 1.0)
    return out


_INPAINT_RADIUS = 5  # px: the neighbourhood cv2.inpaint estimates each hole pixel from (OpenCV's examples use 3-5)


def _cv_inpaint(safe: np.ndarray, hole: np.ndarray, flag: int) -> np.ndarray:
    """cv2.inpaint on the 8-bit image (only the hole is taken from it, so the rounding never touches
    known pixels): OpenCV's Telea on float32 input overshoots at sharp edges, the 8-bit path does not."""
    u8 = np.clip(np.floor(safe * 255 + 0.5), 0, 255).astype(np.uint8)
    fill = cv2.inpaint(u8, hole.astype(np.uint8) * 255, _INPAINT_RADIUS, flag)
    return fill.astype(np.float32) / np.float32(255)


def harmonize(decoded01: np.ndarray, reference01: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Membrane correction of a decoded fill (as in seamless cloning).

    The tokeniser does not reproduce the known pixels exactly (a colour shift, blur); a fill decoded
    next to them therefore shows a seam and carries the same shift. The error ``reference - decoded``
    is measured on the known pixels (``mask`` False), interpolated into the hole with the push-pull
    membrane and added to the decoded pixels: on the known pixels the result equals ``reference``, in
    the hole it keeps the decoded detail with the surroundings' colours. Hole pixels of ``reference``
    are never read. Returns float32 ``(H, W, 3)`` in ``[0, 1]``; an empty or full mask returns the
    decoded pixels unchanged.
    """
    dec = np.asarray(decoded01, dtype=np.float32)
    ref = np.asarray(reference01, dtype=np.float32)
    if dec.shape != ref.shape or dec.ndim != 3:
        raise ValueError(f"decoded {dec.shape} and reference {ref.shape} must be the same HxWx3 shape")
    hole = _check_mask(mask, dec.shape[:2])
    known = ~hole
    if not hole.any() or not known.any():
        return np.array(dec)
    err = np.where(known[:, :, None], ref - dec, np.float32(0.0))  # hole pixels are never read
    return np.clip(dec + _push_pull(err, known), 0.0, 1.0).astype(np.float32)


def _resolve_pads(
    w: int, h: int, left: float, right: float, top: float, bottom: float
) -> tuple[int, int, int, int]:
    res = []
    for name, v, ref in (("left", left, w), ("right", right, w), ("top", top, h), ("bottom", bottom, h)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be an int (pixels) or a float (ratio), got {v!r}")
        if isinstance(v, (float, np.floating)):
            if not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {v}")
            px = int(round(float(v) * ref))
        else:
            px = int(v)
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
        res.append(px)
    if sum(res) <= 0:
        raise ValueError(
            "nothing to extend: left, right, top and bottom are all 0 (ints are pixels, "
            "floats a ratio of the image side)"
        )
    return res[0], res[1], res[2], res[3]


def extend_canvas(
    loaded_or_rgb: LoadedImage | np.ndarray,
    left: float = 0,
    right: float = 0,
    top: float = 0,
    bottom: float = 0,
    fill: Literal["edge", "mean", "gray", "blur"] = "blur",
) -> tuple[np.ndarray, np.ndarray]:
    """Enlarge the canvas for outpainting.

    Amounts are ints (pixels) or floats (ratio of the corresponding side: left/right of the
    width, top/bottom of the height, rounded to whole pixels). The new area is pre-filled so
    the model sees plausible context: ``"blur"`` (default) = edge replication followed by a
    heavy Gaussian blur whose sigma is about half the extension (a soft colour continuation);
    ``"edge"`` = edge replication; ``"mean"`` = mean image colour; ``"gray"`` = 0.5 gray. The
    original pixels are copied unchanged.

    Returns ``(rgb, new_area)``: float32 ``(H', W', 3)`` and bool ``(H', W')``, True in the new
    area (to regenerate).

    Raises:
        ValueError: a negative or non-numeric amount, or all amounts 0.
    """
    rgb = loaded_or_rgb.rgb if isinstance(loaded_or_rgb, LoadedImage) else np.asarray(loaded_or_rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be HxWx3, got shape {rgb.shape}")
    if fill not in ("edge", "mean", "gray", "blur"):
        raise ValueError(f"unknown fill {fill!r}; use edge, mean, gray or blur")
    h, w = rgb.shape[:2]
    l, r, t, b = _resolve_pads(w, h, left, right, top, bottom)
    nh, nw = h + t + b, w + l + r
    new_area = np.ones((nh, nw), dtype=bool)
    new_area[t : t + h, l : l + w] = False
    src = np.ascontiguousarray(rgb, dtype=np.float32)
    if fill == "edge":
        out = cv2.copyMakeBorder(src, t, b, l, r, cv2.BORDER_REPLICATE)
    else:
        canvas = np.zeros((nh, nw, 3), dtype=np.float32)
        canvas[t : t + h, l : l + w] = src
        out = prefill_hole(canvas, new_area, method=fill)
    return out.astype(np.float32, copy=False), new_area


def extend_loaded(
    loaded: LoadedImage,
    left: float = 0,
    right: float = 0,
    top: float = 0,
    bottom: float = 0,
    fill: Literal["edge", "mean", "gray", "blur"] = "blur",
) -> tuple[LoadedImage, np.ndarray]:
    """Like :func:`extend_canvas` but returns a new :class:`LoadedImage` of the enlarged size
    (same mode and bit depth), so that ``compose`` / ``to_output`` work on outpainting results
    and the original region stays bit-identical. In ``raw`` the new area holds the quantised
    fill and is fully opaque if the image has alpha (``alpha`` is 1 there)."""
    rgb, new_area = extend_canvas(loaded, left, right, top, bottom, fill)
    h, w = loaded.raw.shape[:2]
    l, _, t, _ = _resolve_pads(w, h, left, right, top, bottom)
    nh, nw = rgb.shape[:2]
    raw = np.zeros((nh, nw) + loaded.raw.shape[2:], dtype=loaded.raw.dtype)
    raw[t : t + h, l : l + w] = loaded.raw
    if _has_alpha_channel(raw):
        raw[..., -1][new_area] = np.asarray(_full_scale(raw.dtype)).astype(raw.dtype)
    raw = compose(raw, rgb, new_area)
    rgb_new, alpha_new = _raw_to_rgb_alpha(raw)
    rgb_new[t : t + h, l : l + w] = loaded.rgb
    ext = LoadedImage(
        rgb_new, alpha_new, loaded.mode, loaded.bit_depth, (nw, nh), raw, loaded.source, loaded.icc_profile
    )
    return ext, new_area
