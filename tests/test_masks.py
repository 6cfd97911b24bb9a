"""Per-scale keep maps: numpy implementations equal torch's interpolation (shared with the ONNX runtime)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varedit.editing.masks import (area_resize, bilinear_resize, coverage_keep_maps, grow_latent_hole,
                                   official_keep_maps)


@pytest.mark.parametrize("H", [8, 16])
def test_bilinear_and_area_match_torch(H):
    rng = np.random.default_rng(H)
    for pn in range(1, H + 1):
        for t in range(4):
            m = (rng.random((2, H, H)) < 0.5).astype(np.float32)
            if t == 0:  # a rectangle, the usual case
                m[:] = 0
                m[:, 2:H - 3, 1:H // 2] = 1
            tm = torch.from_numpy(m)[:, None]
            ref_b = F.interpolate(tm, size=(pn, pn), mode="bilinear", align_corners=False)[:, 0].numpy()
            ref_a = F.interpolate(tm, size=(pn, pn), mode="area")[:, 0].numpy()
            assert np.array_equal(bilinear_resize(m, pn), ref_b), (pn, t)
            np.testing.assert_allclose(area_resize(m, pn), ref_a, atol=1e-6)


def test_official_keep_maps_equal_golden(golden_edit_cases, golden_models):
    var, _ = golden_models
    for case in golden_edit_cases["edit_cases"]:
        maps = official_keep_maps(case["keep_mask_last_scale"].numpy(), var.patch_nums)
        for m, ref in zip(maps, case["force_per_scale"]):
            assert np.array_equal(np.broadcast_to(m, ref.shape), ref.numpy()), case["name"]


def test_coverage_maps_cover_the_hole_at_every_scale():
    rng = np.random.default_rng(0)
    pns = (1, 2, 3, 4, 6, 8)
    for _ in range(20):
        known = np.ones((8, 8), bool)
        y, x = rng.integers(0, 7, 2)
        known[y:y + rng.integers(1, 5), x:x + rng.integers(1, 5)] = False
        for pn, keep in zip(pns, coverage_keep_maps(known, pns)):
            # every cell whose area touches a hole latent cell is regenerated
            touched = area_resize((~known)[None].astype(np.float32), pn)[0] > 0
            assert not (keep.reshape(pn, pn) & touched).any()
            assert (keep.reshape(pn, pn) | touched).all()


def test_half_coverage_regenerates_the_mostly_hole_cells():
    # the default mode's maps: a cell is kept when at least half of it is known (the closed loop then
    # forces it from its known part only); the last scale regenerates exactly the hole's cells
    rng = np.random.default_rng(1)
    pns = (1, 2, 3, 4, 6, 8)
    for _ in range(20):
        known = rng.random((8, 8)) > rng.uniform(0.1, 0.7)
        maps = coverage_keep_maps(known, pns, threshold=0.5)
        for pn, keep in zip(pns, maps):
            frac = area_resize(known[None].astype(np.float32), pn)[0]
            assert np.array_equal(keep.reshape(pn, pn), frac >= 0.5)
        assert np.array_equal(maps[-1].reshape(8, 8), known)


def test_keep_first_and_grow():
    pns = (1, 2, 4, 8)
    known = np.ones((8, 8), bool)
    known[3:5, 3:5] = False
    maps = coverage_keep_maps(known, pns, keep_first=2)
    assert maps[0].all() and maps[1].all() and not maps[3].all()
    grown = grow_latent_hole(known, 1)
    assert (~grown).sum() == 16 and not grown[2:6, 2:6].any() and grown[1, 1]
