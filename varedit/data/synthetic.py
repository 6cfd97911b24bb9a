"""Procedural, class-conditional image dataset ("synthetic shapes").

Used to train the small demo model, in tests, and for quality measurements. Every
image shows one foreground object of a given class on a textured background.

Classes (index, name: what is drawn)
------------------------------------
0. ``circle``   -- a filled disc.
1. ``square``   -- a filled square, any rotation.
2. ``triangle`` -- a filled equilateral triangle, any rotation.
3. ``star``     -- a filled five-pointed star (inner/outer radius ratio varies), any rotation.
4. ``ring``     -- an annulus (hole radius 45-62 % of the outer radius).
5. ``cross``    -- a plus sign (arm thickness varies), any rotation.
6. ``stripes``  -- a square patch of 3-4 parallel bars, roughly horizontal (+-15 degrees).
7. ``checker``  -- a square patch of 3x3 or 4x4 checkerboard cells, tilted up to +-20 degrees.
8. ``crescent`` -- a disc with an offset disc cut out of it, any rotation.
9. ``heart``    -- a filled heart, tilted up to +-25 degrees.

What varies per image
---------------------
* Background: a linear gradient between two related colours (random hue, saturation,
  brightness and direction), plus low-frequency value noise at two scales, a faint
  colour noise and a mild vignette.
* Foreground colour: random hue and saturation, chosen so that its luminance differs
  from the background's by at least 0.35 (on a 0..1 scale); a gentle linear shading
  across the object.
* Geometry: object extent 30-60 % of the image side (patterned classes 42-62 %),
  position anywhere that keeps it inside the frame, rotation where meaningful, plus
  per-class shape parameters (listed above).

Rendering and determinism
-------------------------
All random parameters are drawn, in a fixed order, from
``np.random.default_rng([seed, class_idx])`` and are expressed in units of the image
side, so :func:`render` returns bit-identical output for identical ``(class_idx, seed,
size)`` regardless of call order, process, or other calls made in between, and the same
``(class_idx, seed)`` rendered at different sizes shows the same picture. Shapes are
rasterised at 4x (2x above 512 px) with sub-pixel precision and downsampled with
``cv2.INTER_AREA``, which gives anti-aliased edges at any ``size >= 16``.

:class:`SyntheticShapes` gives item ``i`` the label ``i % num_classes`` (balanced
classes) and a render seed derived from ``(seed, i)`` via :class:`numpy.random.SeedSequence`.
:func:`write_image_folder` writes the dataset as an ImageNet-style folder tree.

This module deliberately does not import torch; trainers wrap :class:`SyntheticShapes`
in their own ``Dataset``.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..io import atomic_write_with
from PIL import Image

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "MIN_SIZE",
    "SyntheticShapes",
    "class_folder_name",
    "item_seed",
    "preview_grid",
    "render",
    "write_image_folder",
]

logger = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "stripes",
    "checker",
    "crescent",
    "heart",
)
NUM_CLASSES: int = len(CLASS_NAMES)
MIN_SIZE: int = 16

_PATTERN_CLASSES = frozenset({"stripes", "checker"})
_SUBPIXEL_SHIFT = 4  # cv2 drawing with 1/16 pixel precision
_LUMA = np.array([0.299, 0.587, 0.114])
_MIN_CONTRAST = 0.35
_U64 = 0xFFFFFFFFFFFFFFFF  # seeds are taken modulo 2**64 (so negative seeds work too)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def class_folder_name(class_idx: int) -> str:
    """Folder name used by :func:`write_image_folder` for a class, e.g. ``"00_circle"``."""
    _check_class(class_idx)
    return f"{class_idx:02d}_{CLASS_NAMES[class_idx]}"


def item_seed(seed: int, index: int) -> int:
    """Render seed of item ``index`` of a dataset built with ``seed`` (a uint32)."""
    return int(np.random.SeedSequence([int(seed) & _U64, int(index) & _U64]).generate_state(1)[0])


def _check_class(class_idx: int) -> None:
    if not 0 <= int(class_idx) < NUM_CLASSES:
        raise ValueError(f"class_idx must be in [0, {NUM_CLASSES}), got {class_idx}")


def _check_size(size: int) -> None:
    if int(size) < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")


def _resolve_num_classes(num_classes: int | None) -> int:
    if num_classes is None:
        return NUM_CLASSES
    if not 1 <= int(num_classes) <= NUM_CLASSES:
        raise ValueError(f"num_classes must be in [1, {NUM_CLASSES}], got {num_classes}")
    return int(num_classes)


def _luminance(rgb: np.ndarray) -> float:
    return float(np.dot(rgb, _LUMA))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def _rotation(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _regular_polygon(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    t = phase + 2.0 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


# --------------------------------------------------------------------------------------
# shapes: each returns (polygons to fill, polygons to cut out) in unit coordinates
# (object centred at the origin, y pointing down, everything within radius ~1)
# --------------------------------------------------------------------------------------

_Shape = tuple[list[np.ndarray], list[np.ndarray]]
_CIRCLE = _regular_polygon(256)


def _shape_params(name: str, rng: np.random.Generator) -> tuple[float, dict[str, float]]:
    """Per-class rotation (radians) and shape parameters, drawn in a fixed order."""
    p: dict[str, float] = {}
    if name in ("circle", "ring"):
        theta = 0.0
    elif name == "heart":
        theta = math.radians(rng.uniform(-25.0, 25.0))
    elif name == "stripes":
        theta = math.radians(rng.uniform(-15.0, 15.0))
    elif name == "checker":
        theta = math.radians(rng.uniform(-20.0, 20.0))
    else:
        theta = rng.uniform(0.0, 2.0 * math.pi)
    if name == "star":
        p["inner"] = rng.uniform(0.38, 0.5)
    elif name == "ring":
        p["inner"] = rng.uniform(0.45, 0.62)
    elif name == "cross":
        p["arm"] = rng.uniform(0.28, 0.4)
    elif name == "stripes":
        p["bars"] = float(rng.integers(3, 5))
    elif name == "checker":
        p["cells"] = float(rng.integers(3, 5))
    elif name == "crescent":
        p["cut_radius"] = rng.uniform(0.72, 0.85)
        p["cut_offset"] = rng.uniform(0.38, 0.5)
    return theta, p


def _shape_polygons(name: str, p: dict[str, float]) -> _Shape:
    if name == "circle":
        return [_CIRCLE], []
    if name == "square":
        # a bit larger than inscribed in the unit circle, so its area is close to the disc's
        return [_regular_polygon(4, 1.15, math.pi / 4)], []
    if name == "triangle":
        # equilateral, centroid at the origin; a larger circumradius keeps its area comparable
        return [_regular_polygon(3, 1.25)], []
    if name == "star":
        outer = _regular_polygon(5, 1.15)
        inner = _regular_polygon(5, 1.15 * p["inner"], -math.pi / 2 + math.pi / 5)
        pts = np.empty((10, 2))
        pts[0::2], pts[1::2] = outer, inner
        return [pts], []
    if name == "ring":
        return [_CIRCLE], [_CIRCLE * p["inner"]]
    if name == "cross":
        a = p["arm"]
        return [_rect(-1.0, -a, 1.0, a), _rect(-a, -1.0, a, 1.0)], []
    if name == "stripes":
        bars = int(p["bars"])
        h = 0.78  # half side of the patch
        slot = 2.0 * h / (2 * bars - 1)
        polys = [_rect(-h, -h + 2 * k * slot, h, -h + (2 * k + 1) * slot) for k in range(bars)]
        return polys, []
    if name == "checker":
        cells = int(p["cells"])
        h = 0.74
        step = 2.0 * h / cells
        polys = [
            _rect(-h + c * step, -h + r * step, -h + (c + 1) * step, -h + (r + 1) * step)
            for r in range(cells)
            for c in range(cells)
            if (r + c) % 2 == 0
        ]
        return polys, []
    if name == "crescent":
        cut = _CIRCLE * p["cut_radius"] + np.array([p["cut_offset"], 0.0])
        return [_CIRCLE], [cut]
    if name == "heart":
        t = np.linspace(0.0, 2.0 * math.pi, 256, endpoint=False)
        x = 16.0 * np.sin(t) ** 3
        y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([x, y], axis=1)
        pts -= (pts.max(axis=0) + pts.min(axis=0)) / 2.0
        pts /= np.abs(pts).max()
        return [pts], []
    raise AssertionError(f"unknown class {name!r}")


def _rasterise(
    polys: _Shape, theta: float, centre: tuple[float, float], radius: float, size: int
) -> np.ndarray:
    """Coverage mask (float32 in [0, 1], size x size), anti-aliased by supersampling."""
    ss = 4 if size <= 512 else 2
    hi = size * ss
    mask = np.zeros((hi, hi), dtype=np.uint8)
    rot = _rotation(theta)
    scale = float(1 << _SUBPIXEL_SHIFT)

    def to_pixels(pts: np.ndarray) -> np.ndarray:
        xy = pts @ rot.T * radius + np.asarray(centre)  # in units of the image side
        # pixel centres sit at (i + 0.5) / size; cv2 treats integer coords as centres
        px = xy * hi - 0.5
        return np.round(px * scale).astype(np.int32).reshape(-1, 1, 2)

    fill, cut = polys
    # one call per polygon: a multi-polygon fillPoly uses the even-odd rule, which would
    # punch holes where polygons overlap (e.g. the centre of the cross)
    for poly, value in [(p, 255) for p in fill] + [(p, 0) for p in cut]:
        cv2.fillPoly(mask, [to_pixels(poly)], value, lineType=cv2.LINE_8, shift=_SUBPIXEL_SHIFT)
    small = cv2.resize(mask.astype(np.float32) / 255.0, (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(small, 0.0, 1.0)


# --------------------------------------------------------------------------------------
# colours and background
# --------------------------------------------------------------------------------------


def _value_noise(rng: np.random.Generator, cells: int, size: int, channels: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a random (cells x cells) grid, bicubically upsampled.

    The grid is drawn from ``rng`` independently of ``size`` so every size shows the same field.
    """
    grid = rng.uniform(-1.0, 1.0, size=(cells + 3, cells + 3, channels)).astype(np.float32)
    # sample the grid at pixel centres, mapping the image onto the inner `cells` intervals
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * cells + 1.0
    mx, my = np.meshgrid(coords, coords)
    out = cv2.remap(grid, mx, my, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return out.reshape(size, size, channels)


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background gradient endpoints and a contrasting foreground colour (RGB in [0, 1])."""
    h0 = rng.uniform()
    s0 = rng.uniform(0.05, 0.6)
    v0 = rng.uniform(0.12, 0.95)
    bg0 = _hsv(h0, s0, v0)
    bg1 = _hsv(h0 + rng.uniform(-0.08, 0.08), s0 + rng.uniform(-0.15, 0.15), v0 + rng.uniform(-0.12, 0.12))
    lum_bg = 0.5 * (_luminance(bg0) + _luminance(bg1))
    want_bright = lum_bg < 0.5
    fg = None
    for _ in range(64):
        h, s = rng.uniform(), rng.uniform(0.35, 1.0)
        v = rng.uniform(0.75, 1.0) if want_bright else rng.uniform(0.05, 0.4)
        cand = _hsv(h, s, v)
        if abs(_luminance(cand) - lum_bg) >= _MIN_CONTRAST:
            fg = cand
            break
    if fg is None:  # pragma: no cover - practically unreachable, kept for safety
        fg = np.full(3, 1.0 if want_bright else 0.0)
    return bg0, bg1, fg


def _background(rng: np.random.Generator, bg0: np.ndarray, bg1: np.ndarray, size: int) -> np.ndarray:
    angle = rng.uniform(0.0, 2.0 * math.pi)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    xx, yy = np.meshgrid(coords, coords)
    t = np.clip(0.5 + (xx * math.cos(angle) + yy * math.sin(angle)) * 1.2, 0.0, 1.0)[..., None]
    img = bg0.astype(np.float32) * (1.0 - t) + bg1.astype(np.float32) * t
    amp_lo = rng.uniform(0.04, 0.1)
    amp_mid = rng.uniform(0.015, 0.04)
    img = img + amp_lo * _value_noise(rng, 3, size, 1) + amp_mid * _value_noise(rng, 9, size, 1)
    img = img + 0.03 * _value_noise(rng, 5, size, 3)  # faint colour mottling
    vignette = rng.uniform(0.0, 0.18)
    img = img * (1.0 - vignette * (xx**2 + yy**2)[..., None] * 2.0)
    return img


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def render(class_idx: int, seed: int, size: int = 128) -> np.ndarray:
    """Render one image of class ``class_idx`` as an (size, size, 3) uint8 RGB array.

    Deterministic: identical ``(class_idx, seed, size)`` give identical pixels, and the
    same ``(class_idx, seed)`` at different sizes gives the same picture.
    """
    return render_with_mask(class_idx, seed, size)[0]


def render_with_mask(class_idx: int, seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render` and the object's coverage (size, size) float32 in [0, 1] (anti-aliased)."""
    _check_class(class_idx)
    _check_size(size)
    size = int(size)
    name = CLASS_NAMES[class_idx]
    rng = np.random.default_rng([int(seed) & _U64, int(class_idx)])

    bg0, bg1, fg = _colours(rng)
    bg = _background(rng, bg0, bg1, size)

    lo, hi = (0.42, 0.62) if name in _PATTERN_CLASSES else (0.3, 0.6)
    extent = rng.uniform(lo, hi)  # object diameter as a fraction of the side
    radius = extent / 2.0
    theta, params = _shape_params(name, rng)
    polys = _shape_polygons(name, params)
    reach = max(float(np.abs(p @ _rotation(theta).T).max()) for p in polys[0])  # per axis
    margin = radius * reach + 0.03
    centre = (rng.uniform(margin, 1.0 - margin), rng.uniform(margin, 1.0 - margin))
    mask = _rasterise(polys, theta, centre, radius, size)[..., None]

    shade_dir = rng.uniform(0.0, 2.0 * math.pi)
    shade_amp = rng.uniform(0.0, 0.25)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    xx, yy = np.meshgrid(coords - centre[0], coords - centre[1])
    shade = 1.0 + shade_amp * (xx * math.cos(shade_dir) + yy * math.sin(shade_dir)) / max(radius, 1e-6)
    fg_img = fg.astype(np.float32) * shade[..., None]

    img = bg * (1.0 - mask) + fg_img * mask
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8), mask[..., 0].astype(np.float32)


class SyntheticShapes:
    """A fixed-length, deterministic, class-balanced synthetic dataset.

    Item ``i`` is ``(render(i % num_classes, item_seed(seed, i), size), i % num_classes)``.
    ``num_classes`` (default: all of :data:`CLASS_NAMES`) uses the first classes only.
    """

    def __init__(self, n: int, seed: int = 0, size: int = 128, num_classes: int | None = None) -> None:
        if int(n) < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        _check_size(size)
        self.n = int(n)
        self.seed = int(seed)
        self.size = int(size)
        self.num_classes = _resolve_num_classes(num_classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES[: self.num_classes]

    def __len__(self) -> int:
        return self.n

    def label(self, i: int) -> int:
        """Label of item ``i`` without rendering it."""
        return self._index(i) % self.num_classes

    def _index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for dataset of length {self.n}")
        return i

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        i = self._index(i)
        label = i % self.num_classes
        return render(label, item_seed(self.seed, i), self.size), label

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        for i in range(self.n):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={self.n}, seed={self.seed}, size={self.size}, "
            f"num_classes={self.num_classes})"
        )


def write_image_folder(
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    size: int = 128,
    num_classes: int | None = None,
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Write ``SyntheticShapes(n, seed, size, num_classes)`` as an ImageNet-style folder.

    Layout: ``out_dir/{idx:02d}_{name}/{i:06d}.png`` (``i`` is the dataset index) plus
    ``out_dir/classes.json`` holding the class names in order and the generator settings.
    Every file is written to a temporary file in its folder and moved into place with
    :func:`os.replace`, so readers never see partial files. ``progress``, if given, is
    called with each item's index after that item is written.

    Returns ``{"out_dir", "n", "seed", "size", "num_classes", "counts"}`` where ``counts``
    maps each class name to its number of images.
    """
    ds = SyntheticShapes(n, seed=seed, size=size, num_classes=num_classes)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    folders = [root / class_folder_name(k) for k in range(ds.num_classes)]
    for folder in folders:
        folder.mkdir(exist_ok=True)

    counts = [0] * ds.num_classes
    for i in range(ds.n):
        img, label = ds[i]
        pil = Image.fromarray(img)
        atomic_write_with(folders[label] / f"{i:06d}.png", lambda fh, im=pil: im.save(fh, format="PNG"))
        counts[label] += 1
        if progress is not None:
            progress(i)

    meta = {
        "classes": list(ds.class_names),
        "folders": [f.name for f in folders],
        "generator": f"{__name__}.SyntheticShapes",
        "seed": ds.seed,
        "size": ds.size,
        "n": ds.n,
        "num_classes": ds.num_classes,
    }
    payload = (json.dumps(meta, indent=2) + "\n").encode("utf-8")
    atomic_write_with(root / "classes.json", lambda fh: fh.write(payload))
    logger.info("wrote %d synthetic images (%d classes, %d px) to %s", ds.n, ds.num_classes, ds.size, root)
    return {
        "out_dir": str(root),
        "n": ds.n,
        "seed": ds.seed,
        "size": ds.size,
        "num_classes": ds.num_classes,
        "counts": dict(zip(ds.class_names, counts)),
    }


def preview_grid(per_class: int = 8, size: int = 64, seed: int = 0, pad: int = 2) -> np.ndarray:
    """One row per class, ``per_class`` samples each, as a single uint8 RGB image."""
    _check_size(size)
    rows, cols = NUM_CLASSES, int(per_class)
    step = size + pad
    grid = np.full((rows * step + pad, cols * step + pad, 3), 255, dtype=np.uint8)
    for k in range(rows):
        for j in range(cols):
            y, x = pad + k * step, pad + j * step
            grid[y : y + size, x : x + size] = render(k, item_seed(seed, k * cols + j), size)
    return grid
