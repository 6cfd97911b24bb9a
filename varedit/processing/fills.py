"""Hole fills from known pixels only (prefill before tokenising; outpaint canvases)."""

from __future__ import annotations

import logging
from typing import Literal, get_args

import cv2
import numpy as np

from ._common import _check_mask, _distance_outside

logger = logging.getLogger(__name__)


FillMethod = Literal["ns", "telea", "edge", "mean", "gray", "blur", "pushpull"]

FILL_METHODS: tuple[str, ...] = get_args(FillMethod)


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
        small = cv2.resize(
            img, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA
        )
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
