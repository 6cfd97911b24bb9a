"""From a canvas and its hole to what the sampler needs (numpy, torch-free, shared by all backends).

Modes:

``official``  the notebook method: the tokens of the *unfilled* canvas are forced on the keep maps of
              :func:`~varedit.editing.masks.official_keep_maps` (open loop, no growing).
``default``   varedit's method (each step measured on the demo model: README, "Measured quality"):
              1. the hole is prefilled from known pixels only (OpenCV Navier-Stokes inpainting by
                 default, which continues edges and colour regions into the hole) before encoding, so
                 nothing of the hole leaks into the known tokens and the coarse scales see a plausible
                 layout;
              2. keep maps from area coverage: a latent cell is hole when more than three quarters
                 of its pixels are (``coverage=0.25``: on thin strokes it beat half coverage under the
                 independent judge, docs/quality.md), and a cell of any scale is regenerated when more
                 than three quarters of the latent cells under it are hole (the last scale regenerates
                 exactly the hole's cells); ``coverage=1`` regenerates every cell touching the hole. The hole can be
                 grown by ``grow_tokens`` cells (off by default: growing hurt every measure);
              3. open loop: the known cells are forced with the prefilled canvas's own tokens, whose
                 residual chain already carries the prefill's continuation next to the hole.
                 ``closed_loop=True`` instead re-quantises them at every scale from the real latent
                 minus the current reconstruction, pooled over known latent cells only (coarse scales:
                 see 4); it keeps the known region closer to the tokeniser's reconstruction before
                 paste-back, but measured worse on every mask once the prefill continued the image;
              4. the 1x1 token is always forced (the global colour from the surroundings, not an
                 unconditional draw); in the closed loop the coarsest scales (at most
                 ``COARSE_TOKENS`` tokens: 1x1 and 2x2) pool whole cells of the prefilled canvas.

``keep_first`` (both modes): the first k scales are forced whole from the *original* canvas, so the
coarse structure inside the hole is kept and only detail is regenerated (like diffusion's strength:
k = 0 regenerates everything, larger k keeps more).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..options import FILL_COVERAGE, MODES
from ..processing import latent_mask, prefill_hole
from .masks import area_resize, coverage_keep_maps, grow_latent_hole, official_keep_maps, pool_weights

COARSE_TOKENS = 4  # closed loop: scales of at most this many tokens pool whole cells of the prefilled canvas
COVERAGE = FILL_COVERAGE  # the planner's default coverage (varedit.options.FILL_COVERAGE says why)


@dataclass
class CanvasPlan:
    encode_rgb: np.ndarray                 # (S, S, 3) float32 in [0, 1]: what the tokeniser sees
    keep_maps: list[np.ndarray]            # per scale (1, pn*pn) bool, True = forced
    closed_loop: bool
    pool_w: list[np.ndarray | None]        # closed loop: per scale (1, 1, h, w) float32 or None (all cells)
    hole_latent: np.ndarray                # (h, w) bool, the regenerated latent cells (after growing)

    @property
    def empty(self) -> bool:
        return not self.hole_latent.any()


def make_plan(canvas_rgb: np.ndarray, canvas_mask: np.ndarray, patch_nums: tuple[int, ...], downsample: int, *,
              mode: str = "default", keep_first: int = 0, grow_tokens: int = 0, prefill: str = "ns",
              closed_loop: bool = False, coarse_tokens: int = COARSE_TOKENS, coverage: float = COVERAGE
              ) -> CanvasPlan:
    """canvas_rgb (S, S, 3) float in [0, 1]; canvas_mask (S, S) bool, True = regenerate.

    ``coarse_tokens``: in the default mode the 1x1 token (scales of at most 3 tokens) is forced
    whatever its coverage when ``coarse_tokens`` >= 1, as the notebook forces it (from the unfilled
    canvas there, from the prefilled one here). In the closed loop the kept cells of the scales of at
    most ``coarse_tokens`` tokens (default 4: the 1x1 and 2x2 scales of every VAR scale list) pool
    every latent cell, prefilled ones included, finer scales known cells only: the coarse colour and
    layout come from the surroundings' continuation, and nothing leaks. ``coarse_tokens=0`` leaves
    every scale to the coverage rule.
    ``prefill`` is a :func:`~varedit.processing.prefill_hole` method (default ``"ns"``).
    ``prefill="none"``, ``closed_loop=True`` and ``coarse_tokens=0`` change parts of the default mode
    (for ablations)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    if coarse_tokens < 0:
        raise ValueError(f"coarse_tokens must be >= 0, got {coarse_tokens}")
    if grow_tokens < 0:
        raise ValueError(f"grow_tokens must be >= 0, got {grow_tokens}")
    if not 0 <= keep_first <= len(patch_nums):
        raise ValueError(f"keep_first must be in 0..{len(patch_nums)}, got {keep_first}")
    cmask = np.asarray(canvas_mask, bool)
    hole = latent_mask(cmask, downsample)
    if hole.shape != (patch_nums[-1],) * 2:
        raise ValueError(f"canvas gives a {hole.shape} latent grid, the model's last scale is {patch_nums[-1]}")
    rgb = np.asarray(canvas_rgb, np.float32)
    if mode == "official":
        keep = official_keep_maps(~hole, patch_nums)
        for si in range(keep_first):
            keep[si] = np.ones_like(keep[si])
        return CanvasPlan(rgb, keep, False, [None] * len(patch_nums), hole)
    # the same coverage rule from pixels to latent cells: a cell is hole when more than
    # 1 - coverage of its pixels are; a less touched cell is encoded from the prefilled canvas
    # (a quarter measured better than half on thin strokes: docs/quality.md)
    hole = area_resize(cmask[None].astype(np.float32), hole.shape[0])[0] > 1 - coverage + 1e-6
    if grow_tokens > 0 and hole.any():
        hole = ~grow_latent_hole(~hole, grow_tokens)
    known = ~hole
    partial = hole.any() and not hole.all()
    # closed loop: the coarse scales read the whole prefilled cell (pool_w None), finer ones only its
    # known cells (the open loop forces the prefilled canvas's own tokens, which read everything);
    # the global scale (at most 3 tokens: the 1x1) is forced whatever its coverage
    coarse = sum(1 for pn in patch_nums if pn * pn <= coarse_tokens) if partial else 0
    glob = min(coarse, sum(1 for pn in patch_nums if pn * pn <= 3))
    keep = coverage_keep_maps(known, patch_nums, threshold=coverage, keep_first=max(keep_first, glob))
    # with structure kept (keep_first > 0) the hole's own content is wanted, so it is not prefilled
    unfilled = keep_first > 0 or prefill == "none" or not cmask.any()
    enc = rgb if unfilled else prefill_hole(rgb, cmask, method=prefill)
    return CanvasPlan(enc.astype(np.float32), keep, closed_loop,
                      pool_weights(known, patch_nums, max(keep_first, coarse)), hole)
