"""The classifier-free guidance schedule (pure Python and numpy, torch-free).

Guided logits are ``(1 + t) * cond - t * uncond`` with a weight t per scale.  The torch sampler and the
onnxruntime runtime (which must not import torch) both take t from here, so the two cannot drift.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from ..options import GUIDANCE_SCHEDULES

# a schedule by name, or one weight t per scale
Schedule = Union[str, Sequence[float]]

__all__ = ["GUIDANCE_SCHEDULES", "Schedule", "guidance_weight", "guidance_t", "guidance_weights"]


def guidance_weight(cfg: float, si: int, num_scales: int, schedule: str = "linear") -> float:
    """Official: ``ratio = si / (SN - 1)`` then ``t = cfg * ratio``, so the first scale is purely conditional.

    The order is the official one (two roundings in double: the ratio first); ``cfg * si / (SN - 1)``
    differs in the last bit of the double for about a quarter of (cfg, si, SN).  torch then rounds t and
    1 + t to float32, which has hidden that so far, but the arithmetic is the reference's, not a look-alike.
    """
    if schedule == "linear":
        ratio = si / (num_scales - 1)
        return cfg * ratio
    if schedule == "constant":
        return cfg
    raise ValueError(f"unknown guidance schedule {schedule!r} (linear, constant)")


def guidance_t(cfg: float, num_scales: int, schedule: Schedule = "linear",
               error: type[ValueError] = ValueError) -> list[float]:
    """The weight t of every scale: a named schedule (:func:`guidance_weight`) or ``num_scales`` given
    weights.  ``error``: the exception type a caller's users expect (a ValueError subclass)."""
    if isinstance(schedule, str):
        if schedule not in GUIDANCE_SCHEDULES:
            raise error(f"unknown guidance schedule {schedule!r} (linear, constant, or {num_scales} weights)")
        return [float(guidance_weight(cfg, si, num_scales, schedule)) for si in range(num_scales)]
    t = [float(x) for x in schedule]
    if len(t) != num_scales:
        raise error(f"guidance has {len(t)} weights; this model has {num_scales} scales")
    return t


def guidance_weights(cfg: float, num_scales: int, schedule: Schedule = "linear",
                     error: type[ValueError] = ValueError) -> np.ndarray:
    """Per scale ``[1 + t, t]`` (num_scales, 2) float32: the exported sampler's ``guidance`` input, rounded
    from double exactly as torch rounds the Python scalars of ``(1 + t) * cond - t * uncond``."""
    return np.array([[1 + t, t] for t in guidance_t(cfg, num_scales, schedule, error)], dtype=np.float32)
