"""Paste-back: feathered weights, compositing into the original pixels, and colour harmonisation."""

from __future__ import annotations

import logging

import numpy as np

from ._common import (
    _check_mask,
    _color_channels,
    _distance_outside,
    _full_scale,
    _has_alpha_channel,
    _luma,
)
from .fills import _push_pull

logger = logging.getLogger(__name__)

# The paste-back feather used when none is given, in pixels of the output image whatever its size.
# Measured on whole photos of 512-640 px with the 128 px demo model (docs/quality.md, "Feather: how far
# an edit reaches"): with harmonize on, 4 px reads best to the independent judge at the mask's border
# (a hard paste shows the seam; 8 px and more blur the sharp surroundings into the fill) and nothing
# farther than 4 px from the mask changes; half a token (32-40 px there) was clearly worse.
DEFAULT_FEATHER_PX = 4.0


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
        raise ValueError(
            f"decoded {dec.shape} and reference {ref.shape} must be the same HxWx3 shape"
        )
    hole = _check_mask(mask, dec.shape[:2])
    known = ~hole
    if not hole.any() or not known.any():
        return np.array(dec)
    err = np.where(known[:, :, None], ref - dec, np.float32(0.0))  # hole pixels are never read
    return np.clip(dec + _push_pull(err, known), 0.0, 1.0).astype(np.float32)
