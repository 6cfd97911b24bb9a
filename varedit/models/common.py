"""Small pieces shared by the model files."""
from __future__ import annotations

import torch
import torch.nn as nn


def embedding(num: int, dim: int) -> nn.Embedding:
    """``nn.Embedding(num, dim)`` with the same N(0, 1) initialisation (same random stream), except on the
    meta device, where the initialisation is skipped.

    Models are built on the meta device when weights are loaded (``assign=True``); ``normal_`` on a meta
    tensor runs torch's Python reference kernel, whose first use imports ``torch._dynamo`` (about 1.4 s
    of start-up for values that are overwritten anyway).
    """
    w = torch.empty(num, dim)
    if not w.is_meta:
        nn.init.normal_(w)
    return nn.Embedding(num, dim, _weight=w)
