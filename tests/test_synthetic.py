"""Tests for the procedural synthetic-shapes dataset (varedit.data.synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from varedit.data import (
    CLASS_NAMES,
    NUM_CLASSES,
    SyntheticShapes,
    class_folder_name,
    item_seed,
    render,
    write_image_folder,
)


def test_class_names() -> None:
    assert 8 <= NUM_CLASSES == len(CLASS_NAMES) <= 10
    assert len(set(CLASS_NAMES)) == NUM_CLASSES
    assert all(name.isalpha() and name.islower() for name in CLASS_NAMES)
    assert class_folder_name(0) == f"00_{CLASS_NAMES[0]}"


@pytest.mark.parametrize("size", [32, 64, 128, 200])
def test_dtype_and_shape(size: int) -> None:
    for k in (0, NUM_CLASSES - 1):
        img = render(k, seed=5, size=size)
        assert img.dtype == np.uint8
        assert img.shape == (size, size, 3)
        assert img.flags.c_contiguous


def test_same_seed_identical_and_independent_of_call_order() -> None:
    first = [render(k, 123, 64) for k in range(NUM_CLASSES)]
    # interleave unrelated calls, then render again in reverse order
    render(3, 999, 40)
    render(0, 1, 128)
    again = [render(k, 123, 64) for k in reversed(range(NUM_CLASSES))][::-1]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_different_seed_differs() -> None:
    for k in range(NUM_CLASSES):
        a, b = render(k, 1, 48), render(k, 2, 48)
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 5.0


def test_sizes_look_alike() -> None:
    # same (class, seed) at another resolution is the same picture, anti-aliased
    for k in range(NUM_CLASSES):
        big = render(k, 11, 128).astype(np.float32)
        small = render(k, 11, 32).astype(np.float32)
        down = cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA)
        assert np.abs(down - small).mean() < 4.0


def test_images_are_not_trivial() -> None:
    img = render(0, 3, 128)
    # textured background + anti-aliased object -> many distinct colours, visible contrast
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 500
    gray = img.astype(np.float32).mean(axis=2)
    assert gray.max() - gray.min() > 60


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        render(NUM_CLASSES, 0)
    with pytest.raises(ValueError):
        render(-1, 0)
    with pytest.raises(ValueError):
        render(0, 0, size=8)
    with pytest.raises(ValueError):
        SyntheticShapes(4, num_classes=NUM_CLASSES + 1)
    with pytest.raises(ValueError):
        SyntheticShapes(-1)


def _edge_spectrum(img: np.ndarray) -> np.ndarray:
    """Translation-invariant feature: log |FFT| of the gradient magnitude (low frequencies)."""
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    mag = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    spec = np.fft.fftshift(np.abs(np.fft.fft2(mag)))
    c = spec.shape[0] // 2
    f = np.log1p(spec[c - 8 : c + 8, c - 8 : c + 8]).ravel()
    return (f - f.mean()) / (f.std() + 1e-6)


def test_classes_distinguishable_by_nearest_centroid() -> None:
    train = SyntheticShapes(30 * NUM_CLASSES, seed=0, size=32)
    test = SyntheticShapes(10 * NUM_CLASSES, seed=1, size=32)
    xa = np.stack([_edge_spectrum(train[i][0]) for i in range(len(train))])
    ya = np.array([train.label(i) for i in range(len(train))])
    xb = np.stack([_edge_spectrum(test[i][0]) for i in range(len(test))])
    yb = np.array([test.label(i) for i in range(len(test))])
    centroids = np.stack([xa[ya == k].mean(axis=0) for k in range(NUM_CLASSES)])
    pred = np.argmin(((xb[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    acc = float((pred == yb).mean())
    assert acc >= 3.0 / NUM_CLASSES, f"nearest-centroid accuracy {acc:.2f} too close to chance"


def test_dataset_balanced_and_deterministic() -> None:
    ds = SyntheticShapes(35, seed=4, size=32)
    assert len(ds) == 35
    labels = [ds[i][1] for i in range(len(ds))]
    assert labels == [i % NUM_CLASSES for i in range(35)]
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    assert counts.max() - counts.min() <= 1

    img, label = ds[7]
    np.testing.assert_array_equal(img, render(label, item_seed(4, 7), 32))
    np.testing.assert_array_equal(img, SyntheticShapes(35, seed=4, size=32)[7][0])
    np.testing.assert_array_equal(ds[-1][0], ds[34][0])
    assert not np.array_equal(ds[7][0], SyntheticShapes(35, seed=5, size=32)[7][0])
    # items with the same label still differ
    assert not np.array_equal(ds[0][0], ds[NUM_CLASSES][0])
    with pytest.raises(IndexError):
        ds[35]
    assert len(list(ds)) == 35


def test_num_classes_subset() -> None:
    ds = SyntheticShapes(12, seed=0, size=16, num_classes=3)
    assert ds.class_names == CLASS_NAMES[:3]
    assert [ds[i][1] for i in range(12)] == [i % 3 for i in range(12)]


def test_write_image_folder(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    seen: list[int] = []
    summary = write_image_folder(out, n=12, seed=3, size=40, num_classes=4, progress=seen.append)

    assert seen == list(range(12))
    assert summary["counts"] == {CLASS_NAMES[0]: 3, CLASS_NAMES[1]: 3, CLASS_NAMES[2]: 3, CLASS_NAMES[3]: 3}
    assert summary["n"] == 12

    meta = json.loads((out / "classes.json").read_text())
    assert meta["classes"] == list(CLASS_NAMES[:4])
    assert (meta["seed"], meta["size"], meta["n"]) == (3, 40, 12)

    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == [f"{k:02d}_{CLASS_NAMES[k]}" for k in range(4)]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    expected = sorted(
        [f"{k % 4:02d}_{CLASS_NAMES[k % 4]}/{k:06d}.png" for k in range(12)] + ["classes.json"]
    )
    assert files == expected  # no leftover temporary files

    ds = SyntheticShapes(12, seed=3, size=40, num_classes=4)
    for i in (0, 5, 11):
        label = i % 4
        with Image.open(out / class_folder_name(label) / f"{i:06d}.png") as im:
            assert im.mode == "RGB"
            pixels = np.asarray(im)
        np.testing.assert_array_equal(pixels, render(label, item_seed(3, i), 40))
        np.testing.assert_array_equal(pixels, ds[i][0])

    # rewriting over an existing tree is fine and gives the same files
    write_image_folder(out, n=12, seed=3, size=40, num_classes=4)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == expected
