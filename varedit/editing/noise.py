"""The portable sampler's noise (numpy only, torch-free).

The torch sampler (``masked_sample(..., uniforms=...)``) and the onnxruntime runtime
(``varedit_onnx``) must draw the *same* uniforms from the same seed, and the runtime must not
import torch, so the noise lives here rather than in ``varedit.editing.sampler``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["portable_uniforms"]


def portable_uniforms(seed: int, batch: int, patch_nums: Sequence[int]) -> list[np.ndarray]:
    """The noise of the portable sampler: numpy PCG64 uniforms, (batch, pn*pn) float32 per scale.

    One generator is consumed scale by scale, so the stream for a batch of N is fixed by
    (seed, N, patch_nums) alone: it does not depend on how a backend chunks the batch.
    """
    rng = np.random.default_rng(seed)
    return [rng.random((batch, pn * pn), dtype=np.float32) for pn in patch_nums]
