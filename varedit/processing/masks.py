"""Masks: files, arrays, boxes and alpha channels to one bool (H, W) array, True = regenerate."""

from __future__ import annotations

import io
import logging
import math
import os
from typing import Any, Literal, Sequence, Union

import cv2
import numpy as np
from PIL import Image, ImageOps

from ._common import (
    Box,
    MaskError,
    Size,
    _one_line,
    check_regular_file,
    tensor_to_numpy,
)
from .images import LoadedImage

logger = logging.getLogger(__name__)


MaskSource = Union[str, "os.PathLike[str]", bytes, Image.Image, np.ndarray, Any]


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
    as_array = tensor_to_numpy(src)
    if as_array is not None:
        return as_array
    if isinstance(src, np.ndarray):
        return src
    if isinstance(src, Image.Image):
        img = src
        name = getattr(src, "filename", None) or "<PIL image>"
    else:
        if not isinstance(src, (str, os.PathLike, bytes, bytearray)):
            raise TypeError(f"a mask must be a path, bytes, a PIL image, a numpy array or a torch tensor, not "
                            f"{type(src).__name__}")
        name = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "<bytes>"
        if isinstance(src, (str, os.PathLike)):
            check_regular_file(name, "mask", MaskError)
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
    if not 0.0 <= float(threshold) <= 1.0:  # 1 selects nothing (no value exceeds it): allowed, as requests allow it
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
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
                "mask is %dx%d but the image is %dx%d; resizing the mask with nearest neighbour%s",
                w,
                h,
                tw,
                th,
                note,
            )
            mask = cv2.resize(mask.astype(np.uint8), (tw, th), interpolation=cv2.INTER_NEAREST) > 0
    return ~mask if invert else mask


def _is_float_number(v: Any) -> bool:
    return isinstance(v, (float, np.floating))


def box_mask(size_wh: Size, box: Sequence[float]) -> np.ndarray:
    """Rectangular mask (True inside) for ``box = (x0, y0, x1, y1)`` (see :func:`box_pixels`)."""
    cx0, cy0, cx1, cy1 = box_pixels(size_wh, box)
    mask = np.zeros((int(size_wh[1]), int(size_wh[0])), dtype=bool)
    mask[cy0:cy1, cx0:cx1] = True
    return mask


def box_pixels(size_wh: Size, box: Sequence[float]) -> Box:
    """The pixels ``(x0, y0, x1, y1)`` (exclusive ends, clipped to the image) of ``box``, checked without
    allocating anything (argument checks use it before a model is loaded).

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
    return cx0, cy0, cx1, cy1


def mask_from_alpha(loaded: LoadedImage, threshold: float = 0.5) -> np.ndarray:
    """Regenerate mask from transparency: ``alpha < threshold`` (default 0.5) = True.

    Raises:
        MaskError: the image has no alpha channel.
    """
    if loaded.alpha is None:
        name = f" {loaded.source!r}" if loaded.source else ""
        raise MaskError(f"image{name} has no alpha channel (mode {loaded.mode})")
    return loaded.alpha < threshold


NO_REGION = "no mask: give a mask image, a box, or an image with transparent pixels to fill"


def region_mask(
    size_wh: Size,
    mask: MaskSource | None = None,
    box: Sequence[float] | None = None,
    *,
    alpha: np.ndarray | None = None,
    invert: bool = False,
    threshold: float = 0.5,
    on_size_mismatch: Literal["resize", "error"] = "resize",
) -> np.ndarray:
    """The region to regenerate of an image of size ``size_wh``, from exactly one source: a ``mask``
    (:func:`load_mask`), a ``box`` (:func:`box_mask`) or, when both are None, the image's ``alpha``
    (transparent = regenerate, as :func:`mask_from_alpha`). ``invert`` flips the result.

    Raises:
        ValueError: both a mask and a box, or no source at all.
        MaskError: a bad box or mask.
    """
    if mask is not None and box is not None:
        raise ValueError("give a mask or a box, not both")
    if box is not None:
        m = box_mask(size_wh, box)
    elif mask is not None:
        return load_mask(mask, size_wh, invert=invert, threshold=threshold, on_size_mismatch=on_size_mismatch)
    elif alpha is not None:
        m = np.asarray(alpha) < 0.5
    else:
        raise ValueError(NO_REGION)
    return ~m if invert else m


def mask_bbox(mask: np.ndarray) -> Box | None:
    """Bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of the True pixels, or None."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1
