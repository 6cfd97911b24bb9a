"""Masked next-scale prediction: the official method exactly, and the properties of the default mode."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from varedit import processing as P
from varedit.editing.backend import TorchBackend
from varedit.editing.plan import make_plan
from varedit.editing.sampler import Known, masked_sample, new_generator, official_keep_per_scale
from varedit.options import SamplingOptions
from varedit.tasks import Editor


@pytest.fixture(scope="module")
def editor(golden_models):
    var, vae = golden_models
    return Editor(TorchBackend(var, vae, torch.device("cpu")), defaults=SamplingOptions(cfg=2.0, top_k=50, top_p=0.9))


@pytest.fixture(scope="module")
def photo():
    """A smooth, non-square test picture (the tiny golden models are random: any content does)."""
    rng = np.random.default_rng(0)
    small = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((180, 130), Image.BICUBIC))


# ---------------------------------------------------------------------------------------------------
# official mode = the notebook, on the golden cases
# ---------------------------------------------------------------------------------------------------
def test_official_mode_tensor_level_equals_golden(golden_models, golden_cases, golden_edit_cases):
    var, vae = golden_models
    torch.set_num_threads(1)
    for case in golden_edit_cases["edit_cases"]:
        keep = official_keep_per_scale(case["keep_mask_last_scale"], var.patch_nums)
        g, _ = new_generator(case["g_seed"])
        r = masked_sample(var, vae, case["label_B"], known=Known(keep, idx_per_scale=golden_edit_cases["input_tokens"]),
                          cfg=case["cfg"], top_k=case["top_k"], top_p=case["top_p"], generator=g)
        for si, (a, b) in enumerate(zip(r.idx_per_scale, case["final_idx_per_scale"])):
            assert torch.equal(a, b), f"{case['name']} scale {si}"
        for a, b in zip(r.sampled_idx_per_scale, case["sampled_idx_per_scale"]):
            assert torch.equal(a, b)
        for a, b in zip(r.fhat_per_scale, case["fhat_per_scale"]):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        torch.testing.assert_close(r.img_B3HW, case["img_B3HW_01"], atol=1e-4, rtol=0)


def test_official_mode_through_canvas_plans(golden_models, golden_cases, golden_edit_cases):
    """The same cases through the image-level plan + backend: a pixel mask whose latent cells are the
    golden keep mask gives the golden images."""
    var, vae = golden_models
    torch.set_num_threads(1)
    backend = TorchBackend(var, vae, torch.device("cpu"))
    imgs01 = ((golden_cases["img_B3HW"] + 1) / 2).permute(0, 2, 3, 1).numpy()
    ds = vae.downsample
    for case in golden_edit_cases["edit_cases"]:
        hole_px = np.kron(~case["keep_mask_last_scale"].numpy(), np.ones((ds, ds), bool))
        plans = [make_plan(im, hole_px, var.patch_nums, ds, mode="official") for im in imgs01]
        opts = SamplingOptions(cfg=case["cfg"], top_k=case["top_k"], top_p=case["top_p"])
        out, _ = backend.run(plans, case["label_B"].tolist(), opts, backend.stream(case["g_seed"]))
        ref = case["img_B3HW_01"].permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------------
# tensor-level properties
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["eager", "fast"])
def test_all_known_closed_loop_reproduces_the_tokeniser_exactly(golden_models, golden_cases, impl):
    var, vae = golden_models
    img = golden_cases["img_B3HW"]
    with torch.no_grad():
        f = vae.encode(img)
        idx, fhat = vae.quantize.f_to_idx_and_fhat(f)
    keep = [torch.ones(1, pn * pn, dtype=torch.bool) for pn in var.patch_nums]
    B = img.shape[0]
    r = masked_sample(var, vae, torch.full((B,), var.num_classes), known=Known(keep, f_BChw=f),
                      generator=new_generator(0)[0], top_k=50, impl=impl)
    for a, b in zip(r.idx_per_scale, idx):
        assert torch.equal(a, b)
    assert torch.equal(r.fhat_per_scale[-1], fhat[-1])  # bit for bit
    # the eager path decodes as the tokeniser's decoder does; the fast one in channels-last order
    tol = 0 if impl == "eager" else 1e-4
    torch.testing.assert_close(r.img_B3HW, vae.fhat_to_img(fhat[-1]).add(1).mul(0.5), atol=tol, rtol=0)


def test_nothing_forced_equals_plain_generation(golden_models, golden_cases):
    var, vae = golden_models
    labels = torch.tensor([1, 4])
    with torch.no_grad():
        idx = vae.img_to_idx(golden_cases["img_B3HW"])
    keep = [torch.zeros(1, pn * pn, dtype=torch.bool) for pn in var.patch_nums]
    a = masked_sample(var, vae, labels, generator=new_generator(5)[0], top_k=40, top_p=0.9, cfg=2.0)
    b = masked_sample(var, vae, labels, known=Known(keep, idx_per_scale=idx), generator=new_generator(5)[0],
                      top_k=40, top_p=0.9, cfg=2.0)
    for x, y in zip(a.idx_per_scale, b.idx_per_scale):
        assert torch.equal(x, y)
    assert torch.equal(a.img_B3HW, b.img_B3HW)


def test_portable_sampler_is_seeded_by_numpy(golden_models):
    var, vae = golden_models
    from varedit.editing.sampler import portable_uniforms
    u = [torch.from_numpy(x) for x in portable_uniforms(3, 2, var.patch_nums)]
    a = masked_sample(var, vae, torch.tensor([0, 1]), uniforms=u, top_k=20)
    b = masked_sample(var, vae, torch.tensor([0, 1]), uniforms=u, top_k=20)
    c = masked_sample(var, vae, torch.tensor([0, 1]), uniforms=[torch.from_numpy(x) for x in
                                                                portable_uniforms(4, 2, var.patch_nums)], top_k=20)
    assert all(torch.equal(x, y) for x, y in zip(a.idx_per_scale, b.idx_per_scale))
    assert not all(torch.equal(x, y) for x, y in zip(a.idx_per_scale, c.idx_per_scale))


def test_callback_gets_every_scale_with_a_preview(golden_models):
    var, vae = golden_models
    seen = []
    masked_sample(var, vae, torch.tensor([2]), generator=new_generator(0)[0], decode=False,
                  callback=lambda s: seen.append((s.si, tuple(s.preview().shape))))
    assert [s for s, _ in seen] == list(range(len(var.patch_nums)))
    assert all(shape == (1, 3, vae.image_size, vae.image_size) for _, shape in seen)


def test_keep_scales_keeps_the_coarse_tokens_of_the_original(golden_models, golden_cases):
    var, vae = golden_models
    img01 = ((golden_cases["img_B3HW"][:1] + 1) / 2).permute(0, 2, 3, 1).numpy()[0]
    S, ds = vae.image_size, vae.downsample
    hole = np.zeros((S, S), bool)
    hole[S // 4:3 * S // 4, S // 4:3 * S // 4] = True
    k = 3
    plan = make_plan(img01, hole, var.patch_nums, ds, keep_first=k)
    assert all(m.all() for m in plan.keep_maps[:k]) and not plan.keep_maps[k].all()
    with torch.no_grad():
        idx = vae.img_to_idx(golden_cases["img_B3HW"][:1])
        f = vae.encode(golden_cases["img_B3HW"][:1])
    known = Known([torch.from_numpy(m) for m in plan.keep_maps], f_BChw=f,
                  pool_w_per_scale=[None if w is None else torch.from_numpy(w) for w in plan.pool_w])
    r = masked_sample(var, vae, torch.tensor([var.num_classes]), known=known, generator=new_generator(1)[0], top_k=50)
    for si in range(k):
        assert torch.equal(r.idx_per_scale[si], idx[si])


# ---------------------------------------------------------------------------------------------------
# image-level properties
# ---------------------------------------------------------------------------------------------------
def test_pixels_outside_the_feathered_mask_are_identical(editor, photo):
    box = (60, 30, 120, 90)
    r = editor.inpaint(photo, box=box, seed=0, feather=6)
    out = np.asarray(r.image)
    assert out.shape == photo.shape
    w = P.feather(P.box_mask((photo.shape[1], photo.shape[0]), box), 6)
    assert (w == 0).mean() > 0.5
    assert np.array_equal(out[w == 0], photo[w == 0])
    assert not np.array_equal(out[w == 1], photo[w == 1])  # the hole was regenerated


def test_default_feather_is_four_output_pixels_whatever_the_size(editor, photo):
    """On a picture three times the model's size the default blend still reaches 4 px past the mask, not
    half a token of the resized crop (which would be several times wider)."""
    from varedit.processing.blending import DEFAULT_FEATHER_PX
    big = np.asarray(Image.fromarray(photo).resize((540, 390), Image.BICUBIC))
    r = editor.inpaint(big, box=(180, 90, 360, 270), seed=2)
    assert r.settings["feather"] == DEFAULT_FEATHER_PX == 4.0
    assert editor.half_token_px((540, 390)) > 2 * DEFAULT_FEATHER_PX
    yy, xx = np.mgrid[:390, :540]
    d = np.hypot(np.clip(np.maximum(90 - yy, yy - 269), 0, None), np.clip(np.maximum(180 - xx, xx - 359), 0, None))
    out = np.asarray(r.image).astype(int)
    assert np.array_equal(out[d > 4], big[d > 4])
    assert (np.abs(out - big).max(axis=2)[(d > 0) & (d < 4)] > 0).any()  # a blend, not a hard paste


def test_noise_in_the_hole_does_not_change_the_default_output(editor, photo):
    box = (50, 40, 110, 100)
    noisy = photo.copy()
    rng = np.random.default_rng(1)
    noisy[40:100, 50:110] = rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)
    a = np.asarray(editor.inpaint(photo, box=box, seed=3).image)
    b = np.asarray(editor.inpaint(noisy, box=box, seed=3).image)
    assert np.array_equal(a, b)
    # the official mode reads the hole (that is its leak)
    c = np.asarray(editor.inpaint(photo, box=box, seed=3, mode="official").image)
    d = np.asarray(editor.inpaint(noisy, box=box, seed=3, mode="official").image)
    assert not np.array_equal(c, d)


def test_harmonize_changes_only_the_feathered_region(editor, photo):
    box = (50, 40, 110, 100)
    a = np.asarray(editor.inpaint(photo, box=box, seed=4, feather=4).image)
    b = editor.inpaint(photo, box=box, seed=4, feather=4, harmonize=False)
    assert b.settings["harmonize"] is False
    b = np.asarray(b.image)
    w = P.feather(P.box_mask((photo.shape[1], photo.shape[0]), box), 4)
    assert np.array_equal(a[w == 0], b[w == 0]) and np.array_equal(a[w == 0], photo[w == 0])
    assert not np.array_equal(a[w == 1], b[w == 1])


def test_plan_latent_hole_is_the_cells_mostly_in_the_mask():
    from varedit.editing.plan import make_plan
    rgb = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:40] = True           # cells (1..2, 1) whole, (1..2, 2) half: 8 of 16 pixel columns
    mask[60:62, :] = True               # a thin line: at most 2/16 of any cell
    p = make_plan(rgb, mask, (1, 2, 4), 16)
    expect = np.zeros((4, 4), bool)
    expect[1:3, 1] = True
    assert np.array_equal(p.hole_latent, expect)
    assert np.array_equal(p.keep_maps[-1].reshape(4, 4), ~expect)
    # the encoded canvas never shows the hole, also in lightly touched cells
    assert not np.allclose(p.encode_rgb[60:62], rgb[60:62])
    # coverage 1 (the old rule): every touched cell is hole
    p1 = make_plan(rgb, mask, (1, 2, 4), 16, coverage=1.0)
    assert p1.hole_latent[1:3, 1:3].all() and p1.hole_latent[3].all() and p1.hole_latent.sum() == 8


def test_plan_forces_the_coarsest_scales_from_the_prefilled_canvas():
    from varedit.editing.plan import COARSE_TOKENS, make_plan
    from varedit.processing import prefill_hole
    pns = (1, 2, 3, 4, 6, 8)
    rgb = np.random.default_rng(1).random((128, 128, 3)).astype(np.float32)
    mask = np.zeros((128, 128), bool)
    mask[32:96, 32:96] = True  # the centre box: the 3x3 centre cell and more are hole
    p = make_plan(rgb, mask, pns, 16)
    n_coarse = sum(pn * pn <= COARSE_TOKENS for pn in pns)
    assert n_coarse == 2
    for si in range(n_coarse):  # kept (a quarter hole), pooled over every cell of the prefilled canvas
        assert p.keep_maps[si].all() and p.pool_w[si] is None
    assert not p.keep_maps[2].all() and p.pool_w[2] is not None
    np.testing.assert_array_equal(p.encode_rgb, prefill_hole(rgb, mask, "ns"))
    # a 2x2 cell that is mostly hole is still regenerated (outpainting the right half), the 1x1 forced
    half = np.zeros_like(mask)
    half[:, 64:] = True
    ph = make_plan(rgb, half, pns, 16)
    assert ph.keep_maps[0].all() and ph.keep_maps[1].reshape(2, 2).tolist() == [[True, False], [True, False]]
    assert ph.pool_w[1] is None and ph.pool_w[2] is not None
    # coarse_tokens=3 keeps only the 1x1 scale, 0 none (both by coverage from then on)
    p1 = make_plan(rgb, mask, pns, 16, coarse_tokens=3)
    assert p1.keep_maps[0].all() and p1.pool_w[0] is None and p1.pool_w[1] is not None
    p0 = make_plan(rgb, mask, pns, 16, coarse_tokens=0)
    assert p0.pool_w[0] is not None
    # nothing to fill: nothing forced whole by this rule, the plan is the plain tokenisation
    pe = make_plan(rgb, np.zeros_like(mask), pns, 16)
    assert all(w is None for w in pe.pool_w) and np.array_equal(pe.encode_rgb, rgb)
    with pytest.raises(ValueError, match="coarse_tokens"):
        make_plan(rgb, mask, pns, 16, coarse_tokens=-1)


def test_plan_rejects_bad_coverage_and_grow():
    from varedit.editing.plan import make_plan
    rgb, hole = np.zeros((32, 32, 3), np.float32), np.zeros((32, 32), bool)
    with pytest.raises(ValueError, match="coverage"):
        make_plan(rgb, hole, (1, 2), 16, coverage=0)
    with pytest.raises(ValueError, match="grow_tokens"):
        make_plan(rgb, hole, (1, 2), 16, grow_tokens=-1)


def test_same_seed_same_output_and_seed_recorded(editor, photo):
    a = editor.inpaint(photo, box=(10, 10, 70, 60), seed=11)
    b = editor.inpaint(photo, box=(10, 10, 70, 60), seed=11)
    c = editor.inpaint(photo, box=(10, 10, 70, 60), seed=12)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    assert a.settings["seed"] == 11
    d = editor.inpaint(photo, box=(10, 10, 70, 60))
    e = editor.inpaint(photo, box=(10, 10, 70, 60), seed=d.seed)
    assert np.array_equal(np.asarray(d.image), np.asarray(e.image))


def test_empty_mask_returns_the_input_with_a_warning(editor, photo, caplog):
    with caplog.at_level(logging.WARNING):
        r = editor.inpaint(photo, np.zeros(photo.shape[:2], bool), seed=0)
    assert np.array_equal(np.asarray(r.image), photo)
    assert "empty" in caplog.text


def test_candidates_are_ranked_by_log_likelihood(editor, photo):
    r = editor.inpaint(photo, box=(40, 20, 100, 80), seed=0, n=3)
    assert len(r.images) == 3 and len(r.scores) == 3
    assert r.scores == sorted(r.scores, reverse=True)
    assert len({np.asarray(i).tobytes() for i in r.images}) == 3


@pytest.mark.parametrize("strategy", ["crop", "resize", "original"])
def test_strategies_keep_size_and_outside_pixels(editor, photo, strategy):
    box = (120, 80, 170, 125)
    r = editor.inpaint(photo, box=box, seed=0, strategy=strategy, feather=4)
    out = np.asarray(r.image)
    assert out.shape == photo.shape
    w = P.feather(P.box_mask((180, 130), box), 4)
    assert np.array_equal(out[w == 0], photo[w == 0])


def test_rgba_grayscale_and_16bit(editor, photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 200, np.uint8)])
    r = editor.inpaint(Image.fromarray(rgba, "RGBA"), box=(10, 10, 60, 60), seed=0)
    assert r.image.mode == "RGBA" and np.array_equal(np.asarray(r.image)[..., 3], rgba[..., 3])
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    g = editor.inpaint(Image.fromarray(gray), box=(10, 10, 60, 60), seed=0)
    assert g.image.mode == "L" and g.image.size == (180, 130)
    g16 = gray.astype(np.uint16) * 257
    r16 = editor.inpaint(g16, box=(10, 10, 60, 60), seed=0, output_type="np", feather=3)
    out = r16.image
    assert out.dtype == np.uint16 and out.shape == g16.shape
    w = P.feather(P.box_mask((180, 130), (10, 10, 60, 60)), 3)
    assert np.array_equal(out[w == 0], g16[w == 0])


def test_transparent_pixels_are_the_default_mask(editor, photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[50:80, 50:90, 3] = 0
    r = editor.inpaint(Image.fromarray(rgba, "RGBA"), seed=0)
    assert r.mask[60, 60] and not r.mask[10, 10]


def test_outpaint_sizes_and_original_kept(editor, photo):
    r = editor.outpaint(photo, left=40, bottom=0.25, seed=0, feather=4)
    out = np.asarray(r.image)
    assert out.shape == (130 + round(0.25 * 130), 180 + 40, 3)
    inner = out[:130, 40:]
    w = P.feather(r.mask, 4)[:130, 40:]
    assert np.array_equal(inner[w == 0], photo[w == 0])
    # each task has its prefill (outpaint: the push-pull membrane, inpaint: Navier-Stokes)
    assert r.settings["prefill"] == "pushpull"
    assert editor.inpaint(photo, box=(10, 10, 60, 60), seed=0).settings["prefill"] == "ns"
    with pytest.raises(ValueError, match="unknown prefill"):
        editor.inpaint(photo, box=(10, 10, 60, 60), seed=0, prefill="magic")
    with pytest.raises(ValueError):
        editor.outpaint(photo, left=0, seed=0)
    with pytest.raises(ValueError):
        editor.outpaint(photo, left=-5, seed=0)


def test_outpaint_larger_than_a_window_uses_sliding_windows(editor, photo):
    r = editor.outpaint(photo, right=300, seed=0, strategy="original")
    assert r.image.size == (480, 130)
    out = np.asarray(r.image).astype(np.float32)
    # the far end was generated, not left as the smooth fill the model started from: the random tiny model
    # draws busy texture there (mean |Laplacian| about 23 levels against 0 for the fill, 1.3 for the photo)
    fill = P.extend_canvas(photo, right=300, fill="blur")[0][:, 400:] * 255
    busy = [float(np.abs(cv2.Laplacian(a, cv2.CV_32F)).mean()) for a in (out[:, 400:], fill)]
    assert busy[0] > 5 and busy[1] < 0.5 and np.abs(out[:, 400:] - fill).mean() > 10


def test_edit_with_class_and_unknown_class(editor, photo):
    r = editor.edit(photo, (20, 20, 80, 80), 3, seed=0)
    assert r.settings["label"] == 3 and r.image.size == (180, 130)
    with pytest.raises(ValueError):
        editor.edit(photo, (20, 20, 80, 80), "not-a-class", seed=0)


def test_class_edits_regenerate_every_cell_the_box_touches(editor, photo, monkeypatch):
    """Fills keep the cells that are mostly known (coverage 0.25); a class edit regenerates every latent
    cell the box touches (coverage 1), so the coarse scales can lay out the new object. The coverage is
    an option, recorded in the sidecar settings; an edit with a fill's coverage is that fill."""
    plans_seen = []
    run = editor.backend.run
    monkeypatch.setattr(editor.backend, "run", lambda plans, *a, **k: plans_seen.append(plans) or run(plans, *a, **k))
    box = (21, 19, 77, 75)  # off the token grid: partly covered cells at the box's edges
    r_edit = editor.edit(photo, box, 3, seed=0, output_type="np")
    r_fill = editor.inpaint(photo, box=box, label=3, seed=0, output_type="np")
    assert r_edit.settings["coverage"] == 1.0 and r_fill.settings["coverage"] == 0.25
    free_edit = [int((~k).sum()) for k in plans_seen[0][0].keep_maps]
    free_fill = [int((~k).sum()) for k in plans_seen[1][0].keep_maps]
    assert all(e >= f for e, f in zip(free_edit, free_fill)) and free_edit[-1] > free_fill[-1]
    assert plans_seen[0][0].hole_latent.sum() > plans_seen[1][0].hole_latent.sum()
    as_fill = editor.edit(photo, box, 3, seed=0, coverage=0.25, output_type="np")
    assert np.array_equal(as_fill.images[0], r_fill.images[0])
    assert editor.inpaint(photo, box=box, mode="official", seed=0).settings["coverage"] is None
    for bad in (0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="coverage"):
            editor.edit(photo, box, 3, seed=0, coverage=bad)


def test_box_outside_and_bad_mask(editor, photo):
    with pytest.raises(ValueError, match="outside"):
        editor.inpaint(photo, box=(500, 500, 600, 600))
    with pytest.raises(ValueError):
        editor.inpaint(photo, box=(10, 10, 60, 60), mode="nope")


def test_mask_of_another_size_is_resized_with_a_warning(editor, photo, caplog):
    m = np.zeros((65, 90), np.uint8)
    m[20:40, 20:50] = 255
    with caplog.at_level(logging.WARNING):
        r = editor.inpaint(photo, m, seed=0)
    assert r.image.size == (180, 130) and "resiz" in caplog.text.lower()


def test_upscale_size_and_fidelity(editor, photo):
    small = np.asarray(Image.fromarray(photo).resize((64, 48), Image.LANCZOS))
    r = editor.upscale(small, scale=2, seed=0)
    out = np.asarray(r.image)
    assert out.shape == (96, 128, 3)
    # back-projection: the result downsampled is close to the input
    down = np.asarray(Image.fromarray(out).resize((64, 48), Image.BOX)).astype(float)
    assert np.abs(down - small).mean() < 12


def test_progress_callback_with_previews(editor, photo):
    seen = []
    editor.inpaint(photo, box=(40, 20, 100, 80), seed=0, n=2, preview=True,
                   callback=lambda step, total, prev: seen.append((step, total, None if prev is None else prev.shape)))
    SN = len(editor.backend.patch_nums)
    assert [s for s, _, _ in seen] == list(range(SN)) and all(t == SN for _, t, _ in seen)
    S = editor.image_size
    assert all(shape == (2, S, S, 3) for _, _, shape in seen)


# ---------------------------------------------------------------------------------------------------
# label "auto": the class inferred from the known pixels
# ---------------------------------------------------------------------------------------------------


def test_class_log_likelihood_matches_the_golden_teacher_forced_logits(golden_models, golden_cases):
    from varedit.editing.sampler import class_log_likelihood
    var, vae = golden_models
    idx = golden_cases["vae_idxBl"]
    B = idx[0].shape[0]
    g = torch.Generator().manual_seed(0)
    keep = [torch.rand(1, t.shape[1], generator=g) < 0.5 for t in idx]
    with torch.no_grad():
        ll = class_log_likelihood(var, vae, idx, keep, max_rows=3)  # several passes with a ragged last one
    keep_L = torch.cat(keep, dim=1)[0]
    gt = golden_cases["gt_BL"]
    for b in range(B):  # the golden rows' own labels: log-softmax of the reference logits, kept cells only
        c = int(golden_cases["tf_labels"][b])
        lp = golden_cases["tf_logits_BLV"][b].log_softmax(-1).gather(-1, gt[b].unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(ll[b, c], lp[keep_L].sum(), atol=1e-3, rtol=1e-5)
    assert ll.shape == (B, var.num_classes) and torch.isfinite(ll).all()
    var.train()
    try:
        with pytest.raises(ValueError, match="eval"):
            class_log_likelihood(var, vae, idx, keep)
    finally:
        var.eval()


def test_auto_label_is_the_argmax_and_never_reads_the_hole(editor, photo):
    box = (50, 40, 110, 100)
    r = editor.inpaint(photo, box=box, seed=3)
    guess = editor.infer_label(photo, box=box)
    assert r.settings["label_source"] == "inferred" and r.settings["label"] == guess.label
    post = r.settings["label_posterior"]  # the three most likely classes, most likely first
    assert post[0][0] == editor.class_name(guess.label) and post[0][1] >= post[1][1] >= post[2][1]
    assert guess.label == int(np.argmax(guess.log_likelihood)) and abs(guess.posterior.sum() - 1) < 1e-9
    noisy = photo.copy()
    noisy[40:100, 50:110] = np.random.default_rng(1).integers(0, 256, (60, 60, 3), dtype=np.uint8)
    assert np.array_equal(editor.infer_label(noisy, box=box).log_likelihood, guess.log_likelihood)
    # the guess depends on what is seen: another picture scores differently
    other = np.ascontiguousarray(photo[::-1, ::-1])
    assert not np.allclose(editor.infer_label(other, box=box).log_likelihood, guess.log_likelihood)


def test_label_none_given_and_auto_fallbacks(golden_models, photo, caplog):
    var, vae = golden_models
    ed = Editor(TorchBackend(var, vae, torch.device("cpu")), defaults=SamplingOptions(cfg=5.0, top_k=50, top_p=0.9))
    box = (50, 40, 110, 100)
    r = ed.inpaint(photo, box=box, seed=0, label=None)
    assert r.settings["label"] == var.num_classes and r.settings["label_source"] == "unconditional"
    assert ed.inpaint(photo, box=box, seed=0, label="none").settings["label"] == var.num_classes
    assert ed.inpaint(photo, box=box, seed=0, label=2).settings["label_source"] == "given"
    # editing guides at cfg 3 unless told otherwise; generation keeps the model's default
    assert r.settings["cfg"] == 3.0 and ed.inpaint(photo, box=box, seed=0, cfg=1.5).settings["cfg"] == 1.5
    assert ed.generate(0, n=1, seed=0).settings["cfg"] == 5.0
    few = Editor(TorchBackend(var, vae, torch.device("cpu")), auto_label_max_classes=var.num_classes - 1)
    with caplog.at_level(logging.INFO, logger="varedit.tasks"):
        r = few.inpaint(photo, box=box, seed=0)
    assert r.settings["label"] == var.num_classes and "too many classes" in r.settings["label_source"]
    assert few.inpaint(photo, box=box, seed=0, label="infer").settings["label_source"] == "inferred"
    # outpaint infers too
    assert ed.outpaint(photo, right=40, seed=0).settings["label_source"] == "inferred"


def test_a_backend_without_scoring_fills_unconditionally(golden_models, photo):
    var, vae = golden_models

    class NoScore:  # the small Backend interface without the optional score_labels
        def __init__(self, inner):
            self.inner = inner
            self.name, self.image_size, self.patch_nums = "plain", inner.image_size, inner.patch_nums
            self.downsample, self.num_classes = inner.downsample, inner.num_classes

        def stream(self, seed):
            return self.inner.stream(seed)

        def run(self, *a, **k):
            return self.inner.run(*a, **k)

    ed = Editor(NoScore(TorchBackend(var, vae, torch.device("cpu"))))
    r = ed.inpaint(photo, box=(50, 40, 110, 100), seed=0)
    assert r.settings["label"] == var.num_classes and "cannot infer" in r.settings["label_source"]
    with pytest.raises(ValueError, match="cannot score"):
        ed.inpaint(photo, box=(50, 40, 110, 100), seed=0, label="infer")
