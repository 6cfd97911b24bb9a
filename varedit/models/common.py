"""Small pieces shared by the model files."""
from __future__ import annotations

import torch
import torch.nn as nn


def embedding(num: int, dim: int) -> nn.Embedding:
    """``nn.Embedding(num, dim)`` with the same N(0, 1) initialisation (same random stream), except on the
    meta device, where the initialisation is skipped.

    Models are built on the meta device when weights are loaded (``assign=True``); ``normal_`` on a meta
    tensor runs torch's Python reference kernel, whose first use imports ``torch._dynamo``: a noticeable
    start-up for values that are overwritten anyway (docs/decisions.md, "No initialisation on the meta
    device").
    """
    w = torch.empty(num, dim)
    if not w.is_meta:
        nn.init.normal_(w)
    return nn.Embedding(num, dim, _weight=w)


def check_scales(patch_nums: tuple[int, ...], name: str) -> None:
    """A scale list: 1 to 64 strictly increasing side lengths of at most 1024 tokens."""
    ok = 1 <= len(patch_nums) <= 64 and all(isinstance(p, int) and 1 <= p <= 1024 for p in patch_nums)
    if not ok or any(b <= a for a, b in zip(patch_nums, patch_nums[1:])):
        raise ValueError(f"{name} must be 1 to 64 strictly increasing sizes in 1..1024, got {list(patch_nums)}")
