"""Canvas extension for outpainting: the enlarged image, its prefilled new area and the regenerate mask."""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

from ._common import _full_scale, _has_alpha_channel
from .blending import compose
from .fills import prefill_hole
from .images import DEFAULT_MAX_PIXELS, LoadedImage, _raw_to_rgb_alpha, limit_pixels


def _resolve_pads(
    w: int, h: int, left: float, right: float, top: float, bottom: float
) -> tuple[int, int, int, int]:
    res = []
    for name, v, ref in (
        ("left", left, w),
        ("right", right, w),
        ("top", top, h),
        ("bottom", bottom, h),
    ):
        if isinstance(v, (bool, np.bool_)) or not isinstance(
            v, (int, float, np.integer, np.floating)
        ):
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


def outpaint_pads(
    image_wh: tuple[int, int], left: float = 0, right: float = 0, top: float = 0, bottom: float = 0
) -> tuple[int, int, int, int]:
    """The pixels added on each side ``(left, right, top, bottom)``: ints are pixels, floats ratios of the
    side (rounded), as :func:`extend_canvas` adds them."""
    return _resolve_pads(int(image_wh[0]), int(image_wh[1]), left, right, top, bottom)


def extended_size(
    image_wh: tuple[int, int], left: float = 0, right: float = 0, top: float = 0, bottom: float = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[int, int]:
    """``(width, height)`` of the canvas :func:`extend_canvas` makes, checked against ``max_pixels``
    without allocating it (ImageError above it; ValueError for bad amounts)."""
    w, h = int(image_wh[0]), int(image_wh[1])
    l, r, t, b = _resolve_pads(w, h, left, right, top, bottom)
    limit_pixels((w + l + r, h + t + b), max_pixels, "the outpainted canvas")
    return w + l + r, h + t + b


def extend_canvas(
    loaded_or_rgb: LoadedImage | np.ndarray,
    left: float = 0,
    right: float = 0,
    top: float = 0,
    bottom: float = 0,
    fill: Literal["edge", "mean", "gray", "blur"] = "blur",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
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
        ImageError: the enlarged canvas would exceed ``max_pixels`` (checked before allocating it).
    """
    rgb = (
        loaded_or_rgb.rgb
        if isinstance(loaded_or_rgb, LoadedImage)
        else np.asarray(loaded_or_rgb, dtype=np.float32)
    )
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be HxWx3, got shape {rgb.shape}")
    if fill not in ("edge", "mean", "gray", "blur"):
        raise ValueError(f"unknown fill {fill!r}; use edge, mean, gray or blur")
    h, w = rgb.shape[:2]
    nw, nh = extended_size((w, h), left, right, top, bottom, max_pixels)  # before allocating that size
    l, r, t, b = _resolve_pads(w, h, left, right, top, bottom)
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
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[LoadedImage, np.ndarray]:
    """Like :func:`extend_canvas` but returns a new :class:`LoadedImage` of the enlarged size
    (same mode and bit depth), so that ``compose`` / ``to_output`` work on outpainting results
    and the original region stays bit-identical. In ``raw`` the new area holds the quantised
    fill and is fully opaque if the image has alpha (``alpha`` is 1 there)."""
    rgb, new_area = extend_canvas(loaded, left, right, top, bottom, fill, max_pixels)
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
        rgb_new,
        alpha_new,
        loaded.mode,
        loaded.bit_depth,
        (nw, nh),
        raw,
        loaded.source,
        loaded.icc_profile,
    )
    return ext, new_area
