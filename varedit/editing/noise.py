"""The portable sampler's noise (numpy only, torch-free).

The torch sampler (``masked_sample(..., uniforms=...)``) and the onnxruntime runtime
(``varedit_onnx``) must draw the *same* uniforms from the same seed, and the runtime must not
import torch, so the noise lives here rather than in ``varedit.editing.sampler``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["portable_uniforms", "portable_draws", "stream_groups"]


def portable_uniforms(seed: int, batch: int, patch_nums: Sequence[int]) -> list[np.ndarray]:
    """The noise of the portable sampler: numpy PCG64 uniforms, (batch, pn*pn) float32 per scale.

    One generator is consumed scale by scale, so the stream for a batch of N is fixed by
    (seed, N, patch_nums) alone: it does not depend on how a backend chunks the batch.
    """
    rng = np.random.default_rng(seed)
    return [rng.random((batch, pn * pn), dtype=np.float32) for pn in patch_nums]


def stream_groups(stream: Any, B: int) -> list[tuple[int, int, Any]]:
    """``[(start, end, stream)]``: runs of consecutive rows sharing one stream object (one stream: one run)."""
    if not isinstance(stream, (list, tuple)):
        return [(0, B, stream)]
    if len(stream) != B:
        raise ValueError(f"{len(stream)} streams for {B} rows: give one, or one per row")
    out: list[tuple[int, int, Any]] = []
    for i, st in enumerate(stream):
        if out and out[-1][2] is st:
            out[-1] = (out[-1][0], i + 1, st)
        else:
            out.append((i, i + 1, st))
    return out


def portable_draws(stream: Any, B: int, patch_nums: Sequence[int]) -> list[np.ndarray]:
    """The portable sampler's uniforms for B rows, per scale: each run of rows sharing a numpy generator
    draws its own (rows, pn*pn) block, so an image's noise does not depend on its batch."""
    groups = stream_groups(stream, B)
    return [np.concatenate([st.random((b - a, pn * pn), dtype=np.float32) for a, b, st in groups])
            for pn in patch_nums]
