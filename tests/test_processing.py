"""Tests for varedit.processing (torch-free pre/post-processing)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from varedit import processing as P
from varedit.processing import ImageError, MaskError, Window


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _save(img: Image.Image, path, fmt: str = "PNG", **kw):
    img.save(path, fmt, **kw)
    return path


def _marker_image(h: int = 20, w: int = 30) -> np.ndarray:
    """RGB uint8 image with a red block in the top-left corner."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, :] = (0, 0, 255)
    a[:6, :8] = (255, 0, 0)
    return a


# ------------------------------------------------------------------------------- loading


def test_module_does_not_import_torch():
    # a fresh interpreter in which importing torch fails: the package and each of its modules import
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import varedit.processing as P\n"
        "from varedit.processing import blending, canvas, fills, images, masks, windows\n"
        "assert P.load_image and P.prefill_hole and P.plan_crop\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(tmp_path, fmt):
    a = _marker_image()
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = _save(img, tmp_path / f"o.{fmt.lower()}", fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    loaded = P.load_image(path)
    assert loaded.size == (20, 30)
    assert loaded.raw.shape == (30, 20, 3)
    expected = np.rot90(a, -1)
    if fmt == "PNG":
        np.testing.assert_array_equal(loaded.raw, expected)
    else:
        # the red marker moved to the top-right corner
        assert loaded.rgb[2, 17, 0] > 0.8 and loaded.rgb[2, 17, 2] < 0.2
        assert loaded.rgb[2, 2, 2] > 0.8
    assert loaded.rgb.shape == (30, 20, 3) and loaded.rgb.dtype == np.float32


def test_exif_orientation_on_pil_input():
    img = Image.fromarray(_marker_image())
    exif = img.getexif()
    exif[0x0112] = 8
    buf = io.BytesIO()
    img.save(buf, "PNG", exif=exif)
    buf.seek(0)
    loaded = P.load_image(Image.open(buf))
    np.testing.assert_array_equal(loaded.raw, np.rot90(_marker_image(), 1))


def test_load_rgb_fields(tmp_path, rng):
    a = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    loaded = P.load_image(_save(Image.fromarray(a), tmp_path / "a.png"))
    assert loaded.mode == "RGB" and loaded.bit_depth == 8 and loaded.size == (13, 9)
    assert loaded.alpha is None and not loaded.is_gray
    np.testing.assert_allclose(loaded.rgb, a / 255.0, atol=1e-7)
    assert loaded.source.endswith("a.png")


def test_rgba_alpha_preserved(tmp_path, rng):
    a = rng.integers(0, 256, (8, 10, 4), dtype=np.uint8)
    loaded = P.load_image(_save(Image.fromarray(a), tmp_path / "rgba.png"))
    assert loaded.mode == "RGBA" and loaded.has_alpha
    np.testing.assert_allclose(loaded.alpha, a[:, :, 3] / 255.0, atol=1e-7)
    edited = 1.0 - loaded.rgb
    out = P.to_output(edited, loaded)
    assert out.mode == "RGBA"
    got = np.array(out)
    np.testing.assert_array_equal(got[:, :, 3], a[:, :, 3])
    np.testing.assert_array_equal(got[:, :, :3], 255 - a[:, :, :3])
    # compose keeps the alpha channel too, and can make holes opaque on request
    w = np.zeros((8, 10), np.float32)
    w[2:5, 2:5] = 1
    raw = P.compose(loaded.raw, edited, w)
    np.testing.assert_array_equal(raw[:, :, 3], a[:, :, 3])
    raw2 = P.compose(loaded.raw, edited, w, edited_alpha=np.ones((8, 10)))
    assert (raw2[2:5, 2:5, 3] == 255).all()
    np.testing.assert_array_equal(raw2[w == 0], a[w == 0])


def test_grayscale_round_trip_exact(tmp_path, rng):
    a = rng.integers(0, 256, (12, 7), dtype=np.uint8)
    loaded = P.load_image(_save(Image.fromarray(a), tmp_path / "g.png"))
    assert loaded.mode == "L" and loaded.is_gray and loaded.rgb.shape == (12, 7, 3)
    out = P.to_output(loaded.rgb, loaded)
    assert out.mode == "L"
    np.testing.assert_array_equal(np.array(out), a)
    # edit a region: untouched pixels exact, edited ones are the luminance of the edit
    edited = np.zeros_like(loaded.rgb)
    edited[..., 0] = 1.0  # pure red -> luma 0.299
    w = np.zeros((12, 7), np.float32)
    w[:4] = 1
    got = np.array(P.to_output(edited, loaded, weight=w))
    np.testing.assert_array_equal(got[4:], a[4:])
    assert (got[:4] == 76).all()


def test_16bit_gray_round_trip_exact(tmp_path, rng):
    a = rng.integers(0, 65536, (10, 11), dtype=np.uint16)
    loaded = P.load_image(_save(Image.fromarray(a), tmp_path / "g16.png"))
    assert loaded.bit_depth == 16 and loaded.raw.dtype == np.uint16 and loaded.is_gray
    out = P.to_output(loaded.rgb, loaded)
    assert out.mode == "I;16"
    np.testing.assert_array_equal(np.array(out), a)
    w = np.zeros((10, 11), np.float32)
    w[3:6, 3:6] = 0.5
    raw = P.to_output(np.ones_like(loaded.rgb), loaded, as_numpy=True, weight=w)
    assert raw.dtype == np.uint16 and raw.shape == (10, 11)
    np.testing.assert_array_equal(raw[w == 0], a[w == 0])


def test_mode_I_is_treated_as_16bit():
    a = np.array([[0, 1000], [40000, 65535]], np.uint16)
    img = Image.fromarray(a).convert("I")
    assert img.mode == "I"
    loaded = P.load_image(img)
    assert loaded.bit_depth == 16 and loaded.mode == "I"
    np.testing.assert_array_equal(loaded.raw, a)
    assert P.to_output(loaded.rgb, loaded).mode == "I;16"


def test_16bit_rgb_png_and_numpy(tmp_path, rng):
    a = rng.integers(0, 65536, (6, 9, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    P.save_image(a, path)
    loaded = P.load_image(path)
    assert loaded.bit_depth == 16 and loaded.raw.dtype == np.uint16
    np.testing.assert_array_equal(loaded.raw, a)
    back = P.to_output(loaded.rgb, loaded, as_numpy=True)
    np.testing.assert_array_equal(back, a)
    from_np = P.load_image(a)
    assert from_np.mode == "numpy" and from_np.bit_depth == 16
    np.testing.assert_array_equal(P.to_output(from_np.rgb, from_np, as_numpy=True), a)


def test_numpy_inputs(rng):
    f = rng.random((5, 6, 3)).astype(np.float32)
    loaded = P.load_image(f)
    assert loaded.raw.dtype == np.float32 and loaded.bit_depth == 8
    out = P.to_output(loaded.rgb, loaded, as_numpy=True)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, f)
    g1 = rng.integers(0, 256, (5, 6, 1), dtype=np.uint8)
    lg = P.load_image(g1)
    assert lg.is_gray and P.to_output(lg.rgb, lg, as_numpy=True).shape == (5, 6, 1)
    assert P.to_output(lg.rgb, lg).mode == "L"
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        P.load_image(f * 255)
    with pytest.raises(ImageError, match="dtype"):
        P.load_image(np.zeros((4, 4), np.int64))


def test_palette_and_la(tmp_path):
    p = Image.fromarray(_marker_image()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    loaded = P.load_image(_save(p, tmp_path / "p.png"))
    assert loaded.mode == "P" and loaded.raw.shape == (20, 30, 3)
    np.testing.assert_array_equal(loaded.raw, _marker_image())
    la = Image.fromarray(np.dstack([np.full((4, 5), 100, np.uint8), np.full((4, 5), 7, np.uint8)]))
    assert la.mode == "LA"
    lla = P.load_image(la)
    assert lla.is_gray and lla.has_alpha
    out = P.to_output(lla.rgb, lla)
    assert out.mode == "LA"
    np.testing.assert_array_equal(np.array(out), np.array(la))


def test_unreadable_files_raise_image_error(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image\nat all")
    with pytest.raises(ImageError) as ei:
        P.load_image(bad)
    assert "notes.txt" in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(ImageError, match="missing.png"):
        P.load_image(tmp_path / "missing.png")
    good = io.BytesIO()
    Image.fromarray(_marker_image(64, 64)).save(good, "PNG")
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.getvalue()[:-40])
    with pytest.raises(ImageError, match="trunc.png"):
        P.load_image(trunc)
    assert issubclass(ImageError, ValueError) and issubclass(MaskError, ValueError)


def test_limit_pixels(tmp_path):
    P.limit_pixels((100, 100), 10_000)
    with pytest.raises(ImageError, match="MP") as ei:
        P.limit_pixels((20_000, 10_000))
    assert "\n" not in str(ei.value)
    path = _save(Image.fromarray(_marker_image()), tmp_path / "m.png")
    with pytest.raises(ImageError, match="m.png"):
        P.load_image(path, max_pixels=100)


# ------------------------------------------------------------------------------- compose


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [None, 1, 2, 3, 4])
def test_compose_weight_zero_is_bit_identical(rng, dtype, channels):
    shape = (16, 12) if channels is None else (16, 12, channels)
    if dtype == np.float32:
        raw = rng.random(shape).astype(np.float32)
    else:
        raw = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    edited = rng.random((16, 12, 3)).astype(np.float32)
    w = rng.random((16, 12)).astype(np.float32)
    w[w < 0.4] = 0.0
    w[w > 0.9] = 1.0
    out = P.compose(raw, edited, w)
    assert out.dtype == raw.dtype and out.shape == raw.shape
    np.testing.assert_array_equal(out[w == 0], raw[w == 0])
    assert out is not raw
    np.testing.assert_array_equal(P.compose(raw, edited, np.zeros((16, 12))), raw)
    if channels == 3 and dtype == np.uint8:
        np.testing.assert_array_equal(out[w == 1], np.floor(edited[w == 1] * 255 + 0.5).astype(np.uint8))


def test_compose_rejects_bad_weight(rng):
    raw = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError):
        P.compose(raw, np.zeros((4, 4, 3)), np.full((4, 4), 1.5))
    with pytest.raises(ValueError):
        P.compose(raw, np.zeros((4, 4, 3)), np.ones((3, 4)))


# ------------------------------------------------------------------------------- feather


def _brute_distance(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    gy, gx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    d = np.sqrt((gy[..., None] - ys) ** 2 + (gx[..., None] - xs) ** 2)
    return d.min(axis=-1)


@pytest.mark.parametrize("grow,radius", [(0, 5), (3, 4), (2, 0), (0, 0)])
def test_feather_exact_band(grow, radius):
    mask = np.zeros((40, 40), bool)
    mask[15:22, 12:20] = True
    mask[30, 30] = True
    wgt = P.feather(mask, radius, grow=grow)
    assert wgt.dtype == np.float32 and wgt.shape == mask.shape
    d = _brute_distance(mask)
    assert (wgt[mask] == 1.0).all()
    assert (wgt[d <= grow] == 1.0).all()
    assert (wgt[d >= grow + radius + 1e-3] == 0.0).all()
    band = (d > grow + 1e-3) & (d < grow + radius - 1e-3)
    if radius:
        assert ((wgt[band] > 0) & (wgt[band] < 1)).all()
    assert wgt.min() >= 0 and wgt.max() <= 1
    # with compose, everything beyond the band is bit-identical
    raw = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    out = P.compose(raw, np.ones((40, 40, 3), np.float32), wgt)
    outside = d >= grow + radius + 1e-3
    np.testing.assert_array_equal(out[outside], raw[outside])


def test_feather_empty_and_grow_mask():
    assert (P.feather(np.zeros((5, 5), bool), 3) == 0).all()
    m = np.zeros((21, 21), bool)
    m[10, 10] = True
    g = P.grow_mask(m, 3)
    np.testing.assert_array_equal(g, _brute_distance(m) <= 3)
    np.testing.assert_array_equal(P.grow_mask(m, 0), m)
    with pytest.raises(ValueError):
        P.grow_mask(m, -1)


# ------------------------------------------------------------------------------- masks


def test_mask_polarity_threshold_invert():
    a = np.array([[0, 100, 128, 255]], np.uint8)
    np.testing.assert_array_equal(P.load_mask(a, (4, 1)), [[False, False, True, True]])
    np.testing.assert_array_equal(P.load_mask(a, (4, 1), threshold=0.3), [[False, True, True, True]])
    np.testing.assert_array_equal(P.load_mask(a, (4, 1), invert=True), [[True, True, False, False]])
    np.testing.assert_array_equal(P.load_mask(a.astype(np.uint16) * 257, (4, 1)), [[False, False, True, True]])
    np.testing.assert_array_equal(P.load_mask(a / 255.0, (4, 1)), [[False, False, True, True]])
    b = np.array([[True, False]])
    np.testing.assert_array_equal(P.load_mask(b, (2, 1)), b)


def test_mask_from_files(tmp_path):
    a = np.zeros((6, 8), np.uint8)
    a[2:4, 3:6] = 255
    expected = a > 0
    np.testing.assert_array_equal(P.load_mask(_save(Image.fromarray(a), tmp_path / "m.png"), (8, 6)), expected)
    np.testing.assert_array_equal(P.load_mask(Image.fromarray(a).convert("1"), (8, 6)), expected)
    np.testing.assert_array_equal(P.load_mask(Image.fromarray(a.astype(np.uint16) * 257), (8, 6)), expected)
    # a red brush stroke on black counts as painted (max over channels)
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[expected] = (255, 0, 0)
    np.testing.assert_array_equal(P.load_mask(Image.fromarray(rgb), (8, 6)), expected)
    with pytest.raises(MaskError, match="nope.png"):
        P.load_mask(tmp_path / "nope.png", (8, 6))


def test_rgba_mask_uses_alpha_when_transparent():
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = 255  # constant white colour everywhere
    rgba[2:4, 3:6, 3] = 255  # opaque strokes
    m = P.load_mask(Image.fromarray(rgba), (8, 6))
    assert m.sum() == 6 and m[2:4, 3:6].all()
    # black opaque strokes also count: colours ignored when alpha is used
    rgba[..., :3] = 0
    assert P.load_mask(rgba, (8, 6)).sum() == 6
    # fully opaque RGBA: colour decides
    opaque = np.zeros((6, 8, 4), np.uint8)
    opaque[..., 3] = 255
    opaque[1, 1, :3] = 255
    m2 = P.load_mask(opaque, (8, 6))
    assert m2.sum() == 1 and m2[1, 1]


def test_mask_size_mismatch(caplog):
    a = np.zeros((3, 4), np.uint8)
    a[:, 2:] = 255
    with caplog.at_level(logging.WARNING, logger="varedit.processing"):
        m = P.load_mask(a, (8, 6))
    assert m.shape == (6, 8) and m[:, 4:].all() and not m[:, :4].any()
    assert any("resizing" in r.message for r in caplog.records)
    with pytest.raises(MaskError, match="4x3"):
        P.load_mask(a, (8, 6), on_size_mismatch="error")


def test_box_mask():
    m = P.box_mask((10, 8), (2, 1, 5, 4))
    assert m.shape == (8, 10) and m.sum() == 9 and m[1:4, 2:5].all()
    f = P.box_mask((10, 8), (0.0, 0.0, 0.5, 1.0))
    assert f[:, :5].all() and not f[:, 5:].any()
    assert P.box_mask((10, 8), (-5, -5, 3, 3)).sum() == 9  # clipped
    with pytest.raises(MaskError, match="outside"):
        P.box_mask((10, 8), (20, 20, 30, 30))
    with pytest.raises(MaskError, match="empty"):
        P.box_mask((10, 8), (5, 5, 5, 7))
    with pytest.raises(MaskError, match=r"\[0, 1\]"):
        P.box_mask((10, 8), (0.0, 0.0, 1.5, 0.5))
    with pytest.raises(MaskError):
        P.box_mask((10, 8), (1, 2, 3))


def test_mask_from_alpha():
    rgba = np.full((4, 5, 4), 200, np.uint8)
    rgba[1:3, 1:3, 3] = 0
    rgba[0, 0, 3] = 120
    m = P.mask_from_alpha(P.load_image(rgba))
    assert m.sum() == 5 and m[1:3, 1:3].all() and m[0, 0]
    with pytest.raises(MaskError):
        P.mask_from_alpha(P.load_image(rgba[..., :3]))


# ------------------------------------------------------------------------------- windows


def test_plan_crop_contains_bbox_and_is_square():
    mask = np.zeros((600, 900), bool)
    mask[500:560, 850:880] = True
    win = P.plan_crop(mask, (900, 600), 256)
    x0, y0, x1, y1 = win.box
    assert x1 - x0 == y1 - y0 == win.side
    assert x0 <= 850 and y0 <= 500 and x1 >= 880 and y1 >= 560
    assert win.side >= 256 and win.pad == (0, 0, 0, 0)  # shifted inside the image
    assert win.kind == "crop" and win.scale == 256 / win.side
    big = np.zeros((600, 900), bool)
    big[100:500, 100:700] = True
    wb = P.plan_crop(big, (900, 600), 256)
    assert wb.side == 900 and wb.box[0] <= 100 and wb.box[2] >= 700
    assert wb.pad[1] + wb.pad[3] == 300  # taller than the image: edge padding
    with pytest.raises(MaskError, match="empty"):
        P.plan_crop(np.zeros((600, 900), bool), (900, 600), 256)
    with pytest.raises(ValueError):
        P.plan_crop(mask, (900, 600), 100)


def test_plan_crop_small_image():
    mask = np.zeros((50, 80), bool)
    mask[20:25, 30:35] = True
    win = P.plan_crop(mask, (80, 50), 128)
    assert win.side == 80 and win.box[0] == 0 and win.box[2] == 80
    canvas, cmask = P.extract(win, np.random.default_rng(0).random((50, 80, 3), dtype=np.float32), mask)
    assert canvas.shape == (128, 128, 3) and cmask.shape == (128, 128) and cmask.any()


@pytest.mark.parametrize("wh", [(1000, 700), (300, 256), (100, 60), (257, 513)])
def test_plan_tiles_cover_with_overlap(wh):
    w, h = wh
    tiles = P.plan_tiles(wh, 256, overlap=0.5)
    cover = np.zeros((h, w), int)
    for t in tiles:
        assert t.side == 256 and t.scale == 1.0 and t.kind == "tile"
        cover[t.slices] += 1
    assert (cover >= 1).all()
    xs = sorted({t.box[0] for t in tiles})
    ys = sorted({t.box[1] for t in tiles})
    for starts in (xs, ys):
        for a, b in zip(starts, starts[1:]):
            assert b - a <= 128  # overlap >= 50 %
    assert all(t.box[2] <= w for t in tiles) or w < 256


def test_plan_tiles_mask_filter():
    mask = np.zeros((700, 1000), bool)
    mask[10:20, 10:20] = True
    tiles = P.plan_tiles((1000, 700), 256, mask=mask)
    assert tiles and all(mask[t.slices].any() for t in tiles)
    assert len(tiles) < len(P.plan_tiles((1000, 700), 256))
    assert P.plan_tiles((1000, 700), 256, mask=np.zeros((700, 1000), bool)) == []


def _smooth(h: int, w: int) -> np.ndarray:
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack(
        [0.5 + 0.4 * np.sin(gx / w * 3), 0.5 + 0.4 * np.cos(gy / h * 2), (gx + gy) / (w + h)], axis=-1
    ).astype(np.float32)


@pytest.mark.parametrize("wh", [(400, 250), (90, 150)])
def test_extract_place_round_trip_resize(wh):
    w, h = wh
    img = _smooth(h, w)
    win = P.plan_resize(wh, 128)
    assert win.kind == "resize" and win.side == max(w, h)
    canvas, cmask = P.extract(win, img, np.zeros((h, w), bool))
    assert canvas.shape == (128, 128, 3) and canvas.dtype == np.float32 and not cmask.any()
    rgb, wt = P.place(win, canvas, img.shape)
    assert rgb.shape == img.shape and (wt == 1).all()
    assert np.abs(rgb - img).mean() < 0.01 and np.abs(rgb - img).max() < 0.08
    # letterbox padding replicates edges
    if w > h:
        np.testing.assert_allclose(canvas[0], canvas[5], atol=0.02)


def test_tiles_extract_place_exact_and_merge():
    img = np.random.default_rng(3).random((300, 420, 3), dtype=np.float32)
    tiles = P.plan_tiles((420, 300), 128)
    canvases = [P.extract(t, img)[0] for t in tiles]
    rgb, wt = P.place(tiles[0], canvases[0], img.shape)
    np.testing.assert_array_equal(rgb, img[tiles[0].slices])
    assert wt.min() > 0 and wt.max() == 1
    merged, covered = P.merge_windows(tiles, canvases, img.shape)
    assert covered.all()
    np.testing.assert_allclose(merged, img, atol=1e-5)


def test_extract_mask_downscale_is_conservative():
    mask = np.zeros((512, 512), bool)
    mask[100, 100] = True
    win = P.plan_resize((512, 512), 128)
    _, cmask = P.extract(win, np.zeros((512, 512, 3), np.float32), mask)
    assert cmask.sum() >= 1 and cmask[25, 25]
    lat = P.latent_mask(cmask)
    assert lat.shape == (8, 8) and lat.sum() == 1 and lat[1, 1]


def test_window_is_frozen():
    win = Window((0, 0, 16, 16), 16, (16, 16))
    with pytest.raises(Exception):
        win.box = (1, 1, 2, 2)  # type: ignore[misc]
    assert win.latent_size == 1


# ------------------------------------------------------------------------------- filling


@pytest.mark.parametrize("method", ["ns", "telea", "pushpull", "edge", "blur", "mean", "gray"])
def test_prefill_never_reads_hole(method, rng):
    img = _smooth(64, 80)
    hole = np.zeros((64, 80), bool)
    hole[20:40, 10:50] = True
    hole[0:5, 70:80] = True
    a = img.copy()
    b = img.copy()
    a[hole] = rng.random((hole.sum(), 3), dtype=np.float32)
    b[hole] = np.nan
    fa = P.prefill_hole(a, hole, method)
    fb = P.prefill_hole(b, hole, method)
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(fa[~hole], img[~hole])
    assert np.isfinite(fa).all() and fa.min() >= 0 and fa.max() <= 1
    # all-hole -> gray
    np.testing.assert_array_equal(P.prefill_hole(a, np.ones((64, 80), bool), method), np.full_like(a, 0.5))


@pytest.mark.parametrize("method", ["ns", "telea"])
def test_inpainting_prefill_continues_a_bar_the_membrane_washes_out(method):
    # a dark vertical bar on a light background, its middle hidden: the OpenCV fills carry the bar
    # through the hole along its edges, the push-pull membrane blends it into the background
    img = np.full((64, 64, 3), 0.9, np.float32)
    img[:, 28:36] = (0.1, 0.2, 0.3)
    hole = np.zeros((64, 64), bool)
    hole[24:40, 16:48] = True
    centre = (slice(30, 34), slice(30, 34))
    ours = P.prefill_hole(img, hole, method)
    membrane = P.prefill_hole(img, hole, "pushpull")
    assert np.abs(ours[centre] - img[centre]).mean() < 0.35 < np.abs(membrane[centre] - img[centre]).mean()
    # the default method is Navier-Stokes, and an unknown one is a clear error
    np.testing.assert_array_equal(P.prefill_hole(img, hole), P.prefill_hole(img, hole, "ns"))
    with pytest.raises(ValueError, match="unknown fill method"):
        P.prefill_hole(img, hole, "magic")  # type: ignore[arg-type]


def test_pushpull_fills_smoothly():
    img = np.empty((50, 60, 3), np.float32)
    img[:] = (0.2, 0.4, 0.6)
    hole = np.zeros((50, 60), bool)
    hole[10:40, 15:45] = True
    img[hole] = 1.0
    out = P.prefill_hole(img, hole, "pushpull")
    np.testing.assert_allclose(out, np.broadcast_to(np.float32([0.2, 0.4, 0.6]), img.shape), atol=1e-5)
    grad = _smooth(50, 60)
    out2 = P.prefill_hole(grad, hole, "pushpull")
    # filled values stay within the range of the surrounding pixels
    assert np.abs(out2[hole] - grad[hole]).max() < 0.25


def test_extend_canvas_sizes_and_errors():
    img = _smooth(40, 60)
    rgb, new = P.extend_canvas(img, left=10, right=0.5, top=0, bottom=4)
    assert rgb.shape == (44, 100, 3) and new.shape == (44, 100)
    assert not new[0:40, 10:70].any() and new.sum() == 44 * 100 - 40 * 60
    np.testing.assert_array_equal(rgb[0:40, 10:70], img)
    for fill in ("edge", "mean", "gray", "blur"):
        r, _ = P.extend_canvas(img, 0, 8, 0, 0, fill=fill)
        assert r.shape == (40, 68, 3) and np.isfinite(r).all()
    edge, _ = P.extend_canvas(img, 0, 8, 0, 0, fill="edge")
    np.testing.assert_array_equal(edge[:, 67], img[:, 59])
    with pytest.raises(ValueError, match="nothing to extend"):
        P.extend_canvas(img, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="left"):
        P.extend_canvas(img, -5, 10, 0, 0)
    with pytest.raises(ValueError):
        P.extend_canvas(img, 1, 0, 0, 0, fill="noise")  # type: ignore[arg-type]


def test_extend_loaded_keeps_original_pixels(rng):
    a = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    loaded = P.load_image(a)
    ext, new = P.extend_loaded(loaded, left=5, top=0.25)
    assert ext.size == (35, 25) and ext.raw.shape == (25, 35, 4)
    np.testing.assert_array_equal(ext.raw[5:, 5:], a)
    assert (ext.raw[new][:, 3] == 255).all()
    edited = rng.random((25, 35, 3), dtype=np.float32)
    out = np.array(P.to_output(edited, ext, weight=P.feather(new, 0)))
    np.testing.assert_array_equal(out[5:, 5:], a)


def test_harmonize_removes_a_colour_shift_and_never_reads_the_hole():
    rng = np.random.default_rng(0)
    ref = rng.random((48, 40, 3)).astype(np.float32) * 0.6 + 0.2
    hole = np.zeros((48, 40), bool)
    hole[10:30, 8:25] = True
    shift = np.float32([0.1, -0.05, 0.08])
    dec = ref + shift                               # a decoder with a constant colour error
    out = P.harmonize(dec, ref, hole)
    np.testing.assert_allclose(out, ref, atol=1e-5)  # the error is gone, in the hole too
    noisy = ref.copy()
    noisy[hole] = rng.random((int(hole.sum()), 3))
    assert np.array_equal(P.harmonize(dec, noisy, hole), out)
    # nothing to correct from / nothing to correct: the decoded pixels come back
    assert np.array_equal(P.harmonize(dec, ref, np.zeros_like(hole)), dec)
    assert np.array_equal(P.harmonize(dec, ref, np.ones_like(hole)), dec)
    with pytest.raises(ValueError):
        P.harmonize(dec, ref[:10], hole)


def test_long_thin_windows_never_allocate_their_square():
    """A window over a long, thin image (an outpaint of 100,000 pixels) is mostly padding: it is resized
    axis by axis, with the same result as padding the square first, in bounded memory."""
    import tracemalloc

    rng = np.random.default_rng(0)
    img = rng.random((96, 2000, 3)).astype(np.float32)
    mask = np.zeros((96, 2000), bool)
    mask[:, 1500:] = True
    win = P.plan_crop(mask, (2000, 96), 128)
    canvas, cmask = P.extract(win, img, mask)
    left, top, right, bottom = win.pad
    square = cv2.copyMakeBorder(img[win.slices], top, bottom, left, right, cv2.BORDER_REPLICATE)
    assert np.abs(canvas - cv2.resize(square, (128, 128), interpolation=cv2.INTER_AREA)).max() < 1e-6
    msq = cv2.copyMakeBorder(mask[win.slices].astype(np.float32), top, bottom, left, right, cv2.BORDER_REPLICATE)
    assert np.array_equal(cmask, cv2.resize(msq, (128, 128), interpolation=cv2.INTER_AREA) > 0)
    rgb, _ = P.place(win, canvas, img.shape)
    x0, y0, x1, y1 = win.clip_box
    full = cv2.resize(canvas, (win.side, win.side), interpolation=cv2.INTER_CUBIC)
    assert np.abs(rgb - np.clip(full[top:top + y1 - y0, left:left + x1 - x0], 0, 1)).max() < 1e-5

    big = np.zeros((96, 100_128, 3), np.float32)
    bmask = np.zeros((96, 100_128), bool)
    bmask[:, 128:] = True
    win = P.plan_crop(bmask, (100_128, 96), 128)
    tracemalloc.start()
    try:
        canvas, _ = P.extract(win, big, bmask)
        P.place(win, canvas, big.shape)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 30  # the square would be 100128^2 x 3 floats: 120 GB
