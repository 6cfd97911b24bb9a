"""Canvas extension for outpainting: the enlarged image, its prefilled new area and the regenerate mask."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import cv2
import numpy as np

from ._common import _full_scale, _has_alpha_channel
from .blending import compose
from .fills import prefill_hole
from .images import DEFAULT_MAX_PIXELS, LoadedImage, _raw_to_rgb_alpha, limit_pixels


Amount = int | float | str  # pixels, a ratio below 1, or "150%" (outpaint_amount)
AMOUNT_HELP = "whole pixels (64), a ratio of the side below 1 (0.5) or a percentage (150%)"
_PERCENT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*")
_PIXELS = re.compile(r"\s*(\d+)\s*(?:px)?\s*", re.IGNORECASE)


def outpaint_amount(value: Any, name: str = "amount") -> int | float:
    """One outpaint amount in the one meaning every front-end gives it: an int (or ``"64"``, ``"64px"``)
    is pixels; a float below 1 (or ``"0.5"``) a ratio of the side; ``"150%"`` a percentage of the side
    (returned as the ratio 1.5).  A float of 1 or more is refused: JSON cannot tell ``64.0`` from ``64``,
    so such a number would mean pixels to one client and a ratio to another."""
    if isinstance(value, str):
        m = _PIXELS.fullmatch(value)
        if m is not None:
            return int(m.group(1))
        m = _PERCENT.fullmatch(value)
        if m is not None:
            return float(m.group(1)) / 100
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not an amount: give {AMOUNT_HELP}") from None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be {AMOUNT_HELP}, got {value!r}")
    if isinstance(value, (int, np.integer)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
        return int(value)
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    if v >= 1:
        raise ValueError(f"{name}={v:g} is ambiguous (pixels or a ratio of the side?): give {AMOUNT_HELP}")
    return v


def _resolve_pads(
    w: int, h: int, left: Amount, right: Amount, top: Amount, bottom: Amount
) -> tuple[int, int, int, int]:
    res = []
    for name, v, ref in (
        ("left", left, w),
        ("right", right, w),
        ("top", top, h),
        ("bottom", bottom, h),
    ):
        a = outpaint_amount(v, name)
        res.append(int(round(a * ref)) if isinstance(a, float) else a)
    if sum(res) <= 0:
        raise ValueError(
            "nothing to extend: left, right, top and bottom are all 0 (ints are pixels, "
            "floats below 1 a ratio of the side, '150%' a percentage)"
        )
    return res[0], res[1], res[2], res[3]


def outpaint_pads(
    image_wh: tuple[int, int], left: Amount = 0, right: Amount = 0, top: Amount = 0, bottom: Amount = 0
) -> tuple[int, int, int, int]:
    """The pixels added on each side ``(left, right, top, bottom)``, as :func:`extend_canvas` adds them
    (amounts as :func:`outpaint_amount` reads them; ratios rounded to whole pixels)."""
    return _resolve_pads(int(image_wh[0]), int(image_wh[1]), left, right, top, bottom)


def extended_size(
    image_wh: tuple[int, int], left: Amount = 0, right: Amount = 0, top: Amount = 0, bottom: Amount = 0,
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
    left: Amount = 0,
    right: Amount = 0,
    top: Amount = 0,
    bottom: Amount = 0,
    fill: Literal["edge", "mean", "gray", "blur"] = "blur",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, np.ndarray]:
    """Enlarge the canvas for outpainting.

    Amounts are ints (pixels), floats below 1 (ratio of the corresponding side: left/right of
    the width, top/bottom of the height, rounded to whole pixels) or percentages such as
    ``"150%"`` (:func:`outpaint_amount`). The new area is pre-filled so
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
    left: Amount = 0,
    right: Amount = 0,
    top: Amount = 0,
    bottom: Amount = 0,
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
