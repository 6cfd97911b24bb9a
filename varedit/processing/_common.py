"""Small pixel-domain helpers and the error types shared by the processing modules."""

from __future__ import annotations

import os
import stat
from typing import Any

import cv2
import numpy as np

Size = tuple[int, int]

Box = tuple[int, int, int, int]

#: ITU-R BT.601 luma weights, the same ones PIL uses for ``convert("L")``.
_LUMA = (0.299, 0.587, 0.114)


class ImageError(ValueError):
    """An image cannot be read, is not an image, has an unsupported format or is too large."""


class MaskError(ValueError):
    """A mask cannot be read, is empty where it must not be, or does not fit the image."""


def _color_channels(raw: np.ndarray) -> int:
    if raw.ndim == 2:
        return 1
    return 1 if raw.shape[2] in (1, 2) else 3


def _has_alpha_channel(raw: np.ndarray) -> bool:
    return raw.ndim == 3 and raw.shape[2] in (2, 4)


def _full_scale(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return 1.0


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * _LUMA[0] + rgb[..., 1] * _LUMA[1] + rgb[..., 2] * _LUMA[2]


def _check_mask(mask: np.ndarray, hw: tuple[int, int], what: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != hw:
        raise MaskError(f"{what} shape {m.shape} does not match image shape {hw}")
    return m.astype(bool, copy=False)


def _distance_outside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel (0 on the mask)."""
    src = np.where(mask, 0, 1).astype(np.uint8)
    return cv2.distanceTransform(src, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def check_regular_file(path: str, what: str, err: type[ValueError]) -> None:
    """A path that exists and is a regular file: a FIFO or a device would block or never end, and
    that must be an error, not a hang."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise err(f"cannot read {what} {path!r}: file not found") from None
    except OSError as e:
        raise err(f"cannot read {what} {path!r}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise err(f"cannot read {what} {path!r}: it is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise err(f"cannot read {what} {path!r}: not a regular file (a pipe or a device)")


def tensor_to_numpy(x: Any) -> np.ndarray | None:
    """A torch tensor's values as a numpy array (None for anything else), without importing torch:
    image apps and ComfyUI hold images and masks as tensors."""
    if not type(x).__module__.startswith("torch") or not hasattr(x, "detach"):
        return None
    t = x.detach()
    if t.is_floating_point() and str(t.dtype) not in ("torch.float32", "torch.float64"):
        t = t.float()  # numpy has no bfloat16
    return t.cpu().numpy()
