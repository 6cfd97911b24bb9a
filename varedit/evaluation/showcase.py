"""Before/after pictures of every task on held-out synthetic images, and on held-out real photos when
scikit-image's CC0 / public-domain photos are installed (``varedit showcase``).

The README's pictures are made with ``varedit showcase --out varedit/assets/demo/card``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


def _row(images: list[Image.Image], labels: list[str], height: int = 160) -> Image.Image:
    """Images side by side, each scaled to ``height`` (nearest when enlarged: pixels stay visible), captioned."""
    cells = []
    for im in images:
        w = max(1, round(im.width * height / im.height))
        cells.append(im.convert("RGB").resize((w, height), Image.NEAREST if height >= im.height else Image.LANCZOS))
    pad, cap = 6, 16
    W = sum(c.width for c in cells) + pad * (len(cells) + 1)
    canvas = Image.new("RGB", (W, height + cap + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = pad
    for c, lab in zip(cells, labels):
        canvas.paste(c, (x, pad + cap))
        draw.text((x, pad), lab, fill=(0, 0, 0))
        x += c.width + pad
    return canvas


def _stack(rows: list[Image.Image]) -> Image.Image:
    W = max(r.width for r in rows)
    canvas = Image.new("RGB", (W, sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height
    return canvas


def _mark(img: Image.Image, mask: np.ndarray) -> Image.Image:
    """The input with the regenerated region tinted, to show what was asked."""
    a = np.asarray(img.convert("RGB")).astype(np.float32)
    m = mask[..., None]
    a = np.where(m, a * 0.35 + np.array([255, 255, 255]) * 0.65, a)
    return Image.fromarray(a.astype(np.uint8))


def make_showcase(pipe: Any, out: Path, seed: int = 7) -> list[Path]:
    from ..data.synthetic import render
    from ..io import save_image
    from ..processing import box_mask
    S = pipe.image_size
    written = []
    names = [pipe.class_name(i) for i in range(pipe.num_classes)]
    imgs = [Image.fromarray(render(c, 90_000 + c, S)) for c in range(min(4, pipe.num_classes))]

    def emit(name: str, row: Image.Image) -> None:
        written.append(save_image(row, out / f"showcase_{name}.png"))  # the names README shows

    grid = []
    for c in range(min(pipe.num_classes, 10)):
        grid.extend(pipe.generate(c, n=1, seed=seed + c).images)
    emit("generate", _row(grid, names[: len(grid)], height=96))

    rows = []
    box = (S // 4, S // 4, 3 * S // 4, 3 * S // 4)
    for im in imgs[:3]:
        m = box_mask(im.size, box)
        off = pipe.inpaint(im, box=box, seed=seed, mode="official").image
        dflt = pipe.inpaint(im, box=box, seed=seed, n=4).image
        rows.append(_row([im, _mark(im, m), off, dflt], ["input", "hole", "official mode", "default (best of 4)"],
                         height=128))
    emit("inpaint", _stack(rows))

    op = [imgs[0], pipe.outpaint(imgs[0], right=S // 2, seed=seed).image,
          imgs[1], pipe.outpaint(imgs[1], left=S // 4, right=S // 4, top=S // 4, bottom=S // 4, seed=seed).image]
    emit("outpaint", _row(op, ["input", "right +50%", "input", "all sides +25%"], height=128))

    # the box a user draws: around the object, with a margin (as `varedit eval` measures edits)
    from ..data.synthetic import render_with_mask
    from .edits import object_box
    ed = []
    labs = []
    for c, target in ((0, min(3, pipe.num_classes - 1)), (1, min(9, pipe.num_classes - 1))):
        im, cov = render_with_mask(c, 90_000 + c, S)
        ebox = object_box(cov, S // 8)
        ed += [_mark(Image.fromarray(im), box_mask((S, S), ebox)), pipe.edit(im, ebox, target, seed=seed).image]
        labs += ["input, box", f"edit -> {names[target]}"]
    emit("edit", _row(ed, labs, height=128))

    small = imgs[2].resize((S // 2, S // 2), Image.BOX)
    up = pipe.upscale(small, scale=2, seed=seed).image
    emit("upscale", _row([small, small.resize((S, S), Image.LANCZOS), up, imgs[2]],
                         ["input (half size)", "Lanczos 2x", "varedit 2x", "original"], height=128))

    from ..data.photos import photos_available
    from ..data.synthetic import SyntheticShapes
    from .realphoto import heldout_crops, reconstruct_with_pipeline
    # the tokenizer alone: held-out shapes (the model card's set) and held-out photo crops, above their
    # reconstructions
    ds = SyntheticShapes(6, seed=424_242, size=S)
    originals = [ds[i][0] for i in range(6)]
    if photos_available():
        originals += heldout_crops(4, S, seed=50_000)[0]
    recon = reconstruct_with_pipeline(pipe, originals)
    emit("reconstruct", _stack([_row([Image.fromarray(x) for x in originals], ["input"] * len(originals), height=96),
                                _row([Image.fromarray(x) for x in recon], ["reconstruction"] * len(recon), height=96)]))
    if photos_available():
        written += make_real_showcase(pipe, out, seed)
    return written


# object removal on the held-out photos (boxes in the photos' own pixels) and outpainting
REAL_REMOVALS = (("astronaut", (345, 0, 475, 290), "the shuttle model"),
                 ("rocket", (158, 105, 218, 400), "a tower"))
REAL_OUTPAINTS = (("chelsea", 0.5), ("coffee", 0.5))


def make_real_showcase(pipe: Any, out: Path, seed: int = 7) -> list[Path]:
    """Object removal and outpainting on held-out CC0 / public-domain photos (never seen in training),
    beside OpenCV Telea; varedit works at the photo's size through its default window strategy."""
    import cv2

    from ..data.photos import load_photo
    from ..io import save_image
    from ..processing import box_mask
    rows = []
    for name, box, what in REAL_REMOVALS:
        img = Image.fromarray(load_photo(name))
        m = box_mask(img.size, box)
        telea = cv2.inpaint(np.asarray(img), m.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
        ours = pipe.inpaint(img, box=box, seed=seed).image
        rows.append(_row([img, _mark(img, m), Image.fromarray(telea), ours],
                         [f"{name}", f"remove {what}", "OpenCV Telea", "varedit default"], height=200))
    written = [save_image(_stack(rows), out / "showcase_real_remove.png")]
    rows = []
    for name, frac in REAL_OUTPAINTS:
        img = Image.fromarray(load_photo(name))
        add = int(round(img.width * frac))
        canvas = np.zeros((img.height, img.width + add, 3), np.uint8)
        canvas[:, :img.width] = np.asarray(img)
        m = np.zeros(canvas.shape[:2], np.uint8)
        m[:, img.width:] = 255
        telea = cv2.inpaint(canvas, m, 5, cv2.INPAINT_TELEA)
        ours = pipe.outpaint(img, right=add, seed=seed).image
        rows.append(_row([img, Image.fromarray(telea), ours],
                         [f"{name}", f"OpenCV Telea, right +{int(frac * 100)}%", f"varedit, right +{int(frac * 100)}%"],
                         height=200))
    written.append(save_image(_stack(rows), out / "showcase_real_outpaint.png"))
    return written
