"""Canvas extraction never lets masked pixels into unmasked canvas pixels, upscaling included.

A model canvas larger than the crop window (a 192 px model on a 130 px crop) is upscaled bicubically,
which reads 4x4 source pixels around each canvas pixel; a nearest-neighbour mask let pixels just
outside the canvas mask carry the hole's content, so the default mode read the hole (found by the
golden tests on a 192 px golden set).
"""
from __future__ import annotations

import numpy as np
import pytest

from varedit import processing as P


@pytest.mark.parametrize("side,size", [(130, 192), (100, 128), (97, 112), (128, 128), (300, 128)])
def test_unmasked_canvas_pixels_do_not_depend_on_masked_content(side, size):
    rng = np.random.default_rng(side * 1000 + size)
    w, h = side + 20, side
    img = rng.random((h, w, 3)).astype(np.float32)
    for trial in range(6):
        mask = np.zeros((h, w), bool)
        y0, x0 = rng.integers(0, h - 10), rng.integers(0, w - 10)
        mask[y0:y0 + rng.integers(1, 40), x0:x0 + rng.integers(1, 40)] = True
        win = P.plan_crop(mask, (w, h), size)
        a, ma = P.extract(win, img, mask)
        other = img.copy()
        other[mask] = rng.random((int(mask.sum()), 3)).astype(np.float32)
        b, mb = P.extract(win, other, mask)
        assert np.array_equal(ma, mb) and ma.any()
        assert np.array_equal(a[~ma], b[~ma]), (side, size, trial)
        assert not np.array_equal(a[ma], b[ma])
