"""Per-scale keep maps (numpy, torch-free: shared by the torch path and the onnxruntime runtime).

A keep map says, for each token cell of each scale, whether the cell is forced (True) or sampled.
Two mappings from a mask on the last scale's latent grid:

* ``official_keep_maps``: the notebook's rule: bilinear resize (align_corners=False) of the keep mask,
  ``> 0.5``; scales with at most 3 tokens kept whole.  Reproduces torch's ``F.interpolate`` bit for bit.
* ``coverage_keep_maps``: a cell is kept when the fraction of known latent cells under it reaches
  ``threshold`` (area coverage).  With threshold 1 every cell touching the hole is regenerated at every
  scale.  The first ``keep_first`` scales can be kept whole (structure-preserving edits).
"""
from __future__ import annotations

import numpy as np


def _bilinear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # torch's upsample_bilinear2d (align_corners=False) index and weight arithmetic, in float32; the
    # source index is one fused multiply-add in torch's CPU kernel (rounded once), emulated in float64
    scale = np.float32(n_in) / np.float32(n_out)
    dst = np.arange(n_out, dtype=np.float64)
    src = ((dst + 0.5) * np.float64(scale) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam1 = (src - i0.astype(np.float32)).astype(np.float32)
    lam1 = np.where(i1 == i0, np.float32(0), lam1).astype(np.float32)
    return i0, i1, lam1


def bilinear_resize(m_BHW: np.ndarray, size: int) -> np.ndarray:
    """float32 bilinear resize of (B, H, W) to (B, size, size), as ``F.interpolate(align_corners=False)``."""
    x = m_BHW.astype(np.float32)
    _, H, W = x.shape
    h0, h1, lh = _bilinear_axis(H, size)
    w0, w1, lw = _bilinear_axis(W, size)
    lh0, lw0 = (np.float32(1) - lh)[None, :, None], (np.float32(1) - lw)[None, None, :]
    lh1, lw1 = lh[None, :, None], lw[None, None, :]
    x00, x01 = x[:, h0][:, :, w0], x[:, h0][:, :, w1]
    x10, x11 = x[:, h1][:, :, w0], x[:, h1][:, :, w1]
    # weight products first, then summed in this order: the rounding of torch's kernel
    return ((((lh0 * lw0) * x00 + (lh0 * lw1) * x01) + (lh1 * lw0) * x10) + (lh1 * lw1) * x11).astype(np.float32)


def area_resize(m_BHW: np.ndarray, size: int) -> np.ndarray:
    """Area (adaptive average) resize of (B, H, W) to (B, size, size), as ``F.interpolate(mode='area')``."""
    x = m_BHW.astype(np.float64)
    B, H, W = x.shape
    out = np.empty((B, size, size), dtype=np.float64)
    for i in range(size):
        ys, ye = (i * H) // size, -((-(i + 1) * H) // size)
        for j in range(size):
            xs, xe = (j * W) // size, -((-(j + 1) * W) // size)
            out[:, i, j] = x[:, ys:ye, xs:xe].mean(axis=(1, 2))
    return out


def _batch(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m)
    return m[None] if m.ndim == 2 else m


def official_keep_maps(keep_last: np.ndarray, patch_nums: tuple[int, ...]) -> list[np.ndarray]:
    """keep_last: (h, w) or (B, h, w) bool, True = keep.  Returns per scale bool (B, pn*pn)."""
    k = _batch(keep_last).astype(np.float32)
    out = []
    for pn in patch_nums:
        if pn * pn <= 3:
            out.append(np.ones((k.shape[0], pn * pn), dtype=bool))
        else:
            out.append((bilinear_resize(k, pn) > 0.5).reshape(k.shape[0], pn * pn))
    return out


def coverage_keep_maps(known_latent: np.ndarray, patch_nums: tuple[int, ...], threshold: float = 1.0,
                       keep_first: int = 0) -> list[np.ndarray]:
    """known_latent: (h, w) or (B, h, w), 1 = known latent cell.  Returns per scale bool (B, pn*pn)."""
    k = _batch(known_latent).astype(np.float64)
    out = []
    for si, pn in enumerate(patch_nums):
        if si < keep_first:
            out.append(np.ones((k.shape[0], pn * pn), dtype=bool))
        else:
            out.append((area_resize(k, pn) >= threshold - 1e-6).reshape(k.shape[0], pn * pn))
    return out


def pool_weights(known_latent: np.ndarray, patch_nums: tuple[int, ...], keep_first: int = 0
                 ) -> list[np.ndarray | None]:
    """Closed-loop pooling weights per scale: None (all latent cells) for the scales kept whole,
    else the known-cell map (B, 1, h, w) float32, so hole cells never feed the known tokens."""
    k = _batch(known_latent).astype(np.float32)[:, None]
    if k.min() >= 1:
        return [None] * len(patch_nums)
    return [None if si < keep_first else k for si in range(len(patch_nums))]


def grow_latent_hole(known_latent: np.ndarray, cells: int = 1) -> np.ndarray:
    """Shrink the known region by ``cells`` latent cells (8-neighbourhood): the hole grows by one token."""
    k = _batch(known_latent).astype(bool)
    hole = ~k
    for _ in range(cells):
        g = hole.copy()
        g[:, 1:, :] |= hole[:, :-1, :]
        g[:, :-1, :] |= hole[:, 1:, :]
        g[:, :, 1:] |= hole[:, :, :-1]
        g[:, :, :-1] |= hole[:, :, 1:]
        g[:, 1:, 1:] |= hole[:, :-1, :-1]
        g[:, :-1, :-1] |= hole[:, 1:, 1:]
        g[:, 1:, :-1] |= hole[:, :-1, 1:]
        g[:, :-1, 1:] |= hole[:, 1:, :-1]
        hole = g
    out = ~hole
    return out[0] if np.asarray(known_latent).ndim == 2 else out
