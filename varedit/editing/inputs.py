"""From canvas plans to the arrays a backend feeds its model (numpy, torch-free, shared by every backend).

A backend (torch, onnxruntime) only predicts: what a batch of :class:`~varedit.editing.plan.CanvasPlan`
means for the sampler (which cells are forced, from which image, pooled how, with which labels and
noise) is decided here once, so the two backends cannot read a plan differently.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from .noise import portable_draws

if TYPE_CHECKING:  # plans are only read here; importing plan.py would load the image processing (OpenCV)
    from .plan import CanvasPlan

__all__ = ["SamplerInputs", "sampler_inputs", "model_images", "plan_images", "plan_keep_maps"]

# "generate": nothing is forced (no image to tokenise); "open": the forced cells take the tokens of
# ``image``; "closed": they re-quantise the latent of ``image`` minus the running reconstruction
Loop = Literal["generate", "open", "closed"]


@dataclass
class SamplerInputs:
    labels: np.ndarray                      # (B,) int64 class per row
    keep: list[np.ndarray]                  # per scale (B, pn*pn) bool, True = forced
    loop: Loop
    image: np.ndarray | None                # (B, 3, S, S) float32 in [-1, 1], NCHW: what the tokeniser encodes
    pool_w: list[np.ndarray | None] | None  # closed loop, per scale: (B, 1, h, w) float32, None = every cell
    uniforms: list[np.ndarray] | None       # portable sampler: per scale (B, pn*pn) float32 in [0, 1)


def model_images(rgb_BHW3: np.ndarray) -> np.ndarray:
    """Images (B, H, W, 3) in [0, 1] -> the tokeniser's input (B, 3, H, W) float32 in [-1, 1].

    Contiguous NCHW, as the official tokeniser gets its images: a permuted view would be channels-last
    in memory, and the encoder's CPU convolutions round differently for it (enough to flip a token whose
    nearest-code margin is small)."""
    x = np.ascontiguousarray(np.asarray(rgb_BHW3, np.float32).transpose(0, 3, 1, 2))
    return x * 2 - 1


def plan_images(plans: Sequence[CanvasPlan]) -> np.ndarray:
    """The plans' canvases as the tokeniser's input (:func:`model_images`)."""
    return model_images(np.stack([p.encode_rgb for p in plans]))


def plan_keep_maps(plans: Sequence[CanvasPlan]) -> list[np.ndarray]:
    """The plans' keep maps, one (B, pn*pn) bool array per scale."""
    return [np.concatenate([p.keep_maps[si] for p in plans]) for si in range(len(plans[0].keep_maps))]


def _pool_weights(plans: Sequence[CanvasPlan], latent: int) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    for si in range(len(plans[0].pool_w)):
        ws = [p.pool_w[si] for p in plans]
        if all(w is None for w in ws):
            out.append(None)  # every row pools every cell: the tokeniser's plain pooling
        else:
            ones = np.ones((1, 1, latent, latent), np.float32)
            out.append(np.concatenate([w if w is not None else ones for w in ws]))
    return out


def sampler_inputs(plans: Sequence[CanvasPlan], labels: Sequence[int], patch_nums: Sequence[int],
                   uniforms_from: Any = None) -> SamplerInputs:
    """A batch of plans (one per row) and their labels as sampler inputs.

    ``uniforms_from``: a numpy stream (or one per row) for the portable sampler's noise
    (:func:`~varedit.editing.noise.portable_draws`); None when the backend draws its own.
    """
    if not plans:
        raise ValueError("no plans to sample")
    if len(labels) != len(plans):
        raise ValueError(f"{len(labels)} labels for {len(plans)} plans")
    closed = {p.closed_loop for p in plans}
    if len(closed) != 1:
        raise ValueError("a batch mixes closed- and open-loop plans")
    keep = plan_keep_maps(plans)
    if len(keep) != len(patch_nums):
        raise ValueError(f"the plans have {len(keep)} scales, the model {len(patch_nums)}")
    loop: Loop
    if not any(k.any() for k in keep):
        loop = "generate"  # nothing is forced: plain generation, no need to encode
    else:
        loop = "closed" if closed.pop() else "open"
    uniforms = portable_draws(uniforms_from, len(plans), patch_nums) if uniforms_from is not None else None
    return SamplerInputs(
        labels=np.asarray(list(labels), np.int64), keep=keep, loop=loop,
        image=None if loop == "generate" else plan_images(plans),
        pool_w=_pool_weights(plans, patch_nums[-1]) if loop == "closed" else None, uniforms=uniforms)
