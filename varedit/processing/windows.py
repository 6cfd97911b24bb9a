"""Size strategies: square windows of the image mapped onto the model canvas (crop, resize, tiles) and back."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ._common import Box, MaskError, Size, _check_mask
from .masks import mask_bbox

logger = logging.getLogger(__name__)


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


def _huge_square(window: Window) -> bool:
    """A window much larger than the model canvas whose square is mostly padding (a long, thin image):
    the padded square would not fit in memory (a 100128 x 96 outpaint canvas is a 100128-px square), so it
    is resized axis by axis instead (:func:`_pad_and_shrink`, :func:`_grow_and_crop`)."""
    x0, y0, x1, y1 = window.clip_box
    return window.side > window.model_size and window.side ** 2 > 4 * max(1, (x1 - x0) * (y1 - y0))


def _pad_and_shrink(region: np.ndarray, window: Window) -> np.ndarray:
    """Edge-replicate ``region`` to the window's square and area-resize it to the canvas, one axis at a
    time (area resizing is separable), so nothing larger than side x max(region side, canvas) exists."""
    left, top, right, bottom = window.pad
    s = window.model_size
    x = cv2.copyMakeBorder(region, 0, 0, left, right, cv2.BORDER_REPLICATE)
    x = cv2.resize(x, (s, x.shape[0]), interpolation=cv2.INTER_AREA)
    x = cv2.copyMakeBorder(x, top, bottom, 0, 0, cv2.BORDER_REPLICATE)
    out = cv2.resize(x, (s, s), interpolation=cv2.INTER_AREA)
    return out[:, :, None] if out.ndim == 2 and region.ndim == 3 else out


def _grow_and_crop(canvas: np.ndarray, window: Window) -> np.ndarray:
    """The in-image part of ``canvas`` resized (bicubic) to the window's square, one axis at a time and
    cropping after each, so the square itself is never allocated."""
    left, top, _, _ = window.pad
    cx0, cy0, cx1, cy1 = window.clip_box
    side, s = window.side, window.model_size
    y = cv2.resize(canvas, (s, side), interpolation=cv2.INTER_CUBIC)[top:top + (cy1 - cy0)]
    return cv2.resize(y, (side, y.shape[0]), interpolation=cv2.INTER_CUBIC)[:, left:left + (cx1 - cx0)]


def extract(
    window: Window, rgb01: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Cut ``window`` out of the image and resize it to the model canvas.

    Returns ``(canvas_rgb, canvas_mask)``: float32 ``(S, S, 3)`` in ``[0, 1]`` and bool
    ``(S, S)`` (``None`` if ``mask`` is None), ``S = window.model_size``. Outside the image the
    RGB and the mask are edge-replicated alike (a copy of a masked pixel is masked). Downscaling
    uses INTER_AREA, upscaling INTER_CUBIC (clipped). The mask is resized conservatively: a canvas
    pixel is True if any image pixel it is computed from is True (the covered pixels when
    downscaling; when upscaling, the 4x4 bicubic taps, all within 2 image pixels of the nearest
    one), so no pixel outside the canvas mask depends on the masked content.
    """
    w, h = window.image_wh
    if rgb01.shape[:2] != (h, w):
        raise ValueError(f"image shape {rgb01.shape[:2]} does not match window image {(h, w)}")
    ys, xs = window.slices
    left, top, right, bottom = window.pad
    s, side = window.model_size, window.side
    region = np.ascontiguousarray(rgb01[ys, xs], dtype=np.float32)
    if _huge_square(window):
        canvas = _pad_and_shrink(region, window)
    else:
        if any(window.pad):
            region = cv2.copyMakeBorder(region, top, bottom, left, right, cv2.BORDER_REPLICATE)
        canvas = _resize(region, window.model_size, window.side)
    canvas = np.clip(canvas, 0.0, 1.0).astype(np.float32, copy=False)
    canvas = np.ascontiguousarray(canvas)

    cmask = None
    if mask is not None:
        m = _check_mask(mask, (h, w)).astype(np.uint8)[ys, xs]
        if any(window.pad) and not _huge_square(window):
            m = cv2.copyMakeBorder(m, top, bottom, left, right, cv2.BORDER_REPLICATE)
        if _huge_square(window):
            cmask = _pad_and_shrink(m.astype(np.float32), window) > 0
        elif s == side:
            cmask = m > 0
        elif s < side:
            cmask = cv2.resize(m.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA) > 0
        else:
            # bicubic reads source pixels floor(x * side / s) - 2 ... + 2 (OpenCV's nearest is the floor):
            # grow the mask by 2 image pixels before the nearest-neighbour resize
            m = cv2.dilate(m, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
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
    left, top, _, _ = window.pad
    cx0, cy0, cx1, cy1 = window.clip_box
    if _huge_square(window):
        region = _grow_and_crop(canvas, window)
    else:
        full = (
            canvas
            if side == s
            else cv2.resize(
                canvas, (side, side), interpolation=cv2.INTER_AREA if side < s else cv2.INTER_CUBIC
            )
        )
        region = full[top : top + (cy1 - cy0), left : left + (cx1 - cx0)]
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
