"""Distribution and pixel metrics (numpy)."""
from __future__ import annotations

import cv2
import numpy as np


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D): the FID formula.

    tr(sqrt(S1 S2)) is computed as the sum of square roots of the eigenvalues of sqrt(S1) S2 sqrt(S1),
    which is symmetric PSD, so only ``eigh`` is needed (no scipy).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    sq1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sq1 @ s2 @ sq1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(ev, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8-range images (values 0..255), optionally over mask pixels only."""
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    if mask is not None:
        d = d[np.asarray(mask, bool)]
    mse = float(d.mean()) if d.size else 0.0
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def kid(fake: np.ndarray, real: np.ndarray, groups: int = 8) -> tuple[float, float, list[float]]:
    """Kernel distance between two feature sets (N, D): the unbiased estimate of the squared MMD with
    the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3 (the KID formula), over all pairs.

    Returns (estimate, standard error, leave-one-group-out estimates).  The standard error is the
    delete-a-group jackknife over ``groups`` consecutive groups of ``fake`` (the small, varying set;
    ``real`` is the fixed reference).  Rows of two ``fake`` sets that belong to the same images give
    paired leave-out values, so the standard error of a difference between two methods follows from
    them too (:func:`paired_se`).  Unbiased: it can be slightly negative when the sets agree.
    """
    x, y = np.asarray(fake, np.float64), np.asarray(real, np.float64)
    m, n = len(x), len(y)
    if m < 2 * groups or n < 2:
        raise ValueError(f"kid needs at least {2 * groups} fake and 2 real samples, got {m} and {n}")
    kxx, kxy = _poly_kernel(x, x), _poly_kernel(x, y)
    np.fill_diagonal(kxx, 0.0)
    kyy = _poly_kernel(y, y)
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))

    def estimate(keep: np.ndarray) -> float:
        k = int(keep.sum())
        xx = kxx[np.ix_(keep, keep)].sum() / (k * (k - 1))
        return float(xx + yy - 2 * kxy[keep].mean())

    full = estimate(np.ones(m, bool))
    bounds = np.linspace(0, m, groups + 1).astype(int)
    loo = []
    for g in range(groups):
        keep = np.ones(m, bool)
        keep[bounds[g]:bounds[g + 1]] = False
        loo.append(estimate(keep))
    return full, jackknife_se(loo), loo


def jackknife_se(leave_out: list[float] | np.ndarray) -> float:
    v = np.asarray(leave_out, np.float64)
    g = len(v)
    return float(np.sqrt((g - 1) / g * ((v - v.mean()) ** 2).sum()))


def paired_se(leave_out_a: list[float], leave_out_b: list[float]) -> float:
    """Jackknife standard error of KID(a) - KID(b) for two methods judged on the same images."""
    return jackknife_se(np.asarray(leave_out_a) - np.asarray(leave_out_b))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """SSIM of uint8-range images (Gaussian window 11, sigma 1.5, on luma), averaged over ``mask``
    pixels when given (the SSIM map is computed over the whole image, so the window sees context)."""
    def luma(im: np.ndarray) -> np.ndarray:
        im = np.asarray(im, np.float64)
        return im @ np.array([0.299, 0.587, 0.114]) if im.ndim == 3 else im

    x, y = luma(a), luma(b)
    blur = lambda z: cv2.GaussianBlur(z, (11, 11), 1.5)  # noqa: E731
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return float(smap[np.asarray(mask, bool)].mean() if mask is not None else smap.mean())


RING_EDGES = (4, 8, 16, 32)  # px: the bands (0, 4], (4, 8], (8, 16], (16, 32] and (32, inf) outside a mask


def ring_labels(edges: tuple[float, ...] = RING_EDGES) -> list[str]:
    """The band names of :func:`outside_change`: ``"0-4"``, ``"4-8"``, ..., ``">32"``."""
    bounds = [0, *edges]
    return [f"{a:g}-{b:g}" for a, b in zip(bounds, bounds[1:])] + [f">{edges[-1]:g}"]


def outside_change(before: np.ndarray, after: np.ndarray, mask: np.ndarray,
                   edges: tuple[float, ...] = RING_EDGES) -> dict[str, dict[str, float]]:
    """How much and how far an edit changed the picture outside its mask.

    Every pixel outside ``mask`` (True = edited region) falls in the band of its Euclidean distance ``d``
    to the nearest mask pixel (the distance :func:`varedit.processing.feather` uses): ``(0, e1]``,
    ``(e1, e2]``, ..., ``(e_last, inf)``.  A pixel's change is the largest absolute difference over its
    channels, in the images' own levels (0-255 for uint8).  Returns, per band (:func:`ring_labels`), the
    mean and the max change and the number of pixels; a band without pixels has ``nan`` mean and max.
    An empty mask puts every pixel in the last band.
    """
    a, b = np.asarray(before), np.asarray(after)
    if a.shape != b.shape:
        raise ValueError(f"before {a.shape} and after {b.shape} differ in shape")
    m = np.asarray(mask, bool)
    if m.shape != a.shape[:2]:
        raise ValueError(f"mask {m.shape} does not match the image {a.shape[:2]}")
    if list(edges) != sorted(edges) or not edges or edges[0] <= 0:
        raise ValueError(f"edges must be positive and increasing, got {edges}")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if diff.ndim == 3:
        diff = diff.max(axis=2)
    if m.any():
        d = cv2.distanceTransform(np.where(m, 0, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    else:
        d = np.full(m.shape, np.inf, np.float32)
    bounds = [0.0, *map(float, edges), np.inf]
    out: dict[str, dict[str, float]] = {}
    for label, lo, hi in zip(ring_labels(edges), bounds, bounds[1:]):
        sel = ~m & (d > lo) & (d <= hi)
        v = diff[sel]
        out[label] = {"mean": float(v.mean()) if v.size else float("nan"),
                      "max": float(v.max()) if v.size else float("nan"), "pixels": int(v.size)}
    return out
