"""Before/after pictures of every task on held-out synthetic images (``varedit showcase``).

The README's pictures are made with ``varedit showcase --out varedit/assets/demo/card``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


def _row(images: list[Image.Image], labels: list[str], height: int = 160) -> Image.Image:
    """Images side by side, each scaled to ``height`` (nearest: pixels stay visible), captioned."""
    cells = []
    for im in images:
        w = max(1, round(im.width * height / im.height))
        cells.append(im.convert("RGB").resize((w, height), Image.NEAREST))
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
        written.append(save_image(row, out / f"{name}.png"))

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

    ebox = (S // 5, S // 5, 4 * S // 5, 4 * S // 5)
    ed = []
    labs = []
    for im, target in ((imgs[0], min(3, pipe.num_classes - 1)), (imgs[1], min(9, pipe.num_classes - 1))):
        ed += [im, pipe.edit(im, ebox, target, seed=seed, n=4).image]
        labs += ["input", f"edit -> {names[target]}"]
    emit("edit", _row(ed, labs, height=128))

    small = imgs[2].resize((S // 2, S // 2), Image.BOX)
    up = pipe.upscale(small, scale=2, seed=seed).image
    emit("upscale", _row([small, small.resize((S, S), Image.LANCZOS), up, imgs[2]],
                         ["input (half size)", "Lanczos 2x", "varedit 2x", "original"], height=128))
    return written
