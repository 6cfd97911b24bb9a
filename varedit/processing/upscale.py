"""The pixel work of upscaling around the model: the Lanczos start, the back-projection that makes the
result's downscaled version match the input again, and the output's mode (alpha, gray, 16-bit) kept."""
from __future__ import annotations

import cv2
import numpy as np

from .images import LoadedImage, load_image


def lanczos(rgb: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """``rgb`` (float [0, 1]) resized to ``size_wh`` with Lanczos, clipped to [0, 1], float32."""
    return np.clip(cv2.resize(rgb, size_wh, interpolation=cv2.INTER_LANCZOS4), 0, 1).astype(np.float32)


def back_project(rgb: np.ndarray, low: np.ndarray) -> np.ndarray:
    """``rgb`` corrected so that its area-downscaled version matches ``low`` (the input) again."""
    H, W = rgb.shape[:2]
    down = cv2.resize(rgb, (low.shape[1], low.shape[0]), interpolation=cv2.INTER_AREA)
    return np.clip(rgb + cv2.resize(low - down, (W, H), interpolation=cv2.INTER_CUBIC), 0, 1)


def resized_like(loaded: LoadedImage, W: int, H: int) -> LoadedImage:
    """A LoadedImage of the target size with the input's mode (alpha resized, gray and 16-bit kept)."""
    raw = loaded.raw
    big = cv2.resize(raw.astype(np.float32), (W, H), interpolation=cv2.INTER_LANCZOS4)
    if raw.ndim == 3 and big.ndim == 2:
        big = big[..., None]
    if np.issubdtype(raw.dtype, np.integer):
        info = np.iinfo(raw.dtype)
        big = np.clip(np.floor(big + 0.5), info.min, info.max)
    else:
        big = np.clip(big, 0, 1)
    return load_image(big.astype(raw.dtype))
