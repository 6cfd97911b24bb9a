"""ComfyUI's tensors <-> the numpy arrays the varedit API takes.

ComfyUI's conventions: an IMAGE is a float tensor ``[B, H, W, C]`` in 0..1 (C = 3; 1 and 4 are
accepted here too), a MASK a float tensor ``[B, H, W]`` (or ``[H, W]``) where 1 = edit. varedit takes
float32 ``[H, W, C]`` arrays in [0, 1] and returns float32 arrays of the same layout, with every pixel
of paste-back weight 0 copied from the input (no quantisation on the way), so a pixel farther than
the feather width from the mask comes back as the very same float32 value.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: a MASK value above this is "edit" (the same rule as varedit's mask files: > half of full scale)
MASK_THRESHOLD = 0.5


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def image_batch(image: Any, what: str = "image") -> list[np.ndarray]:
    """An IMAGE tensor ``[B, H, W, C]`` (C in 1, 3, 4) -> B float32 arrays ``[H, W, C]`` in [0, 1].

    Values are clamped to [0, 1] (some nodes overshoot slightly); NaN or infinite values, another
    rank, an empty batch or another channel count are a ``ValueError``.
    """
    import torch
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{what} must be a ComfyUI IMAGE (a torch tensor [B, H, W, C]), got {type(image).__name__}")
    if image.ndim != 4:
        raise ValueError(f"{what} must be a ComfyUI IMAGE [B, H, W, C], got a tensor of shape {_shape(image)}")
    b, h, w, c = _shape(image)
    if b == 0 or h == 0 or w == 0:
        raise ValueError(f"{what} is empty (shape {_shape(image)})")
    if c not in (1, 3, 4):
        raise ValueError(f"{what} has {c} channels (shape {_shape(image)}); expected 3 (RGB), 4 (RGBA) or 1")
    if not image.dtype.is_floating_point:
        raise ValueError(f"{what} must be a float tensor in 0..1, got dtype {image.dtype}")
    arr = image.detach().to("cpu", torch.float32).numpy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    arr = np.clip(arr, 0.0, 1.0)
    return [np.ascontiguousarray(arr[i]) for i in range(b)]


def mask_batch(mask: Any, n: int, hw: tuple[int, int], what: str = "mask") -> list[np.ndarray]:
    """A MASK tensor ``[B, H, W]`` or ``[H, W]`` (1 = edit) -> ``n`` bool arrays ``[H, W]`` (True = edit).

    A mask batch of 1 applies to every image; another batch size than ``n`` or 1, or another size
    than the images' ``hw``, is a ``ValueError`` (nothing is resized silently). A value counts as
    edit above :data:`MASK_THRESHOLD`.

    A mask with nothing to edit anywhere is reported as empty before its size is compared: ComfyUI's
    LoadImage gives an image without alpha a placeholder mask of zeros ``[1, 64, 64]``, whatever the
    image's size, and "resize the mask" would send the user the wrong way.
    """
    import torch
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{what} must be a ComfyUI MASK (a torch tensor [B, H, W]), got {type(mask).__name__}")
    m = mask
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"{what} must be a ComfyUI MASK [B, H, W] or [H, W], got shape {_shape(mask)}")
    mb, mh, mw = _shape(m)
    arr = m.detach().to("cpu", torch.float32).numpy()
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    edit = arr > MASK_THRESHOLD
    if not edit.any():
        raise ValueError(f"the {what} is empty: paint the region to regenerate in the mask editor (or connect a "
                         f"mask whose region is 1)")
    if (mh, mw) != tuple(hw):
        raise ValueError(f"{what} is {mw}x{mh} but the image is {hw[1]}x{hw[0]} (width x height); "
                         "resize the mask to the image first")
    if mb not in (1, n):
        raise ValueError(f"{what} has a batch of {mb} but the image batch has {n}; give 1 mask or {n}")
    return [edit[0 if mb == 1 else i] for i in range(n)]


def to_image(arrays: Sequence[np.ndarray]) -> Any:
    """Float arrays ``[H, W, C]`` in [0, 1] (or uint8) of one size -> an IMAGE tensor ``[B, H, W, C]``."""
    import torch
    if not arrays:
        raise ValueError("no images to return")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"the outputs differ in size ({sorted(shapes)}); they cannot form one IMAGE batch")
    stack = np.stack([a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32, copy=False)
                      for a in arrays])
    if stack.ndim == 3:  # gray HxW
        stack = stack[..., None]
    return torch.from_numpy(np.ascontiguousarray(stack))


def to_mask(masks: Sequence[np.ndarray]) -> Any:
    """Bool arrays ``[H, W]`` -> a MASK tensor ``[B, H, W]`` (1.0 = edited)."""
    import torch
    return torch.from_numpy(np.stack([np.asarray(m, np.float32) for m in masks]))
