"""Measure object removal on synthetic images whose background is known exactly.

    python -m varedit_plugins.bench_remove [--n 40] [--model demo] [--seed 50000]

Each synthetic image (``varedit.data.synthetic.render``) is rendered twice with the same random
stream: once as it is, once with the object's coverage set to zero, which gives the true background
behind the object. The object's pixels (coverage > 0, its anti-aliased rim included) are removed by
each method and compared with that background, inside the object's region:

* ``PSNR``: of the fill against the true background (dB; rewards blur, as every hole PSNR does);
* ``ghost``: the share of the object's pixels whose filled colour is closer to the removed object's
  colour than to the background's, i.e. how much of the object was drawn back (or left standing).

Two masks per object: the whole object (every pixel it touches, its anti-aliased rim included) and a
tight one (coverage > 0.5, as a segmentation or a careful brush gives: the rim is left outside, which
is what growing the region is for). Methods: varedit's ``remove`` task with the fill unconditional
(label none) or guided by the inferred class (label auto), and OpenCV Navier-Stokes, each on the
region grown by 0, 2 and 4 pixels.
This is a measurement script, not library code: it reaches into the synthetic renderer's private
``_rasterise`` to get the background.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any
from unittest import mock

import cv2
import numpy as np


def render_with_background(class_idx: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8, true background uint8, object coverage float (H, W) in [0, 1])."""
    from varedit.data import synthetic as S
    real = S._rasterise
    seen: list[np.ndarray] = []

    def capture(*a: Any, **k: Any) -> np.ndarray:
        m = real(*a, **k)
        seen.append(np.asarray(m, np.float32))
        return m

    with mock.patch.object(S, "_rasterise", capture):
        img = S.render(class_idx, seed, size)
    with mock.patch.object(S, "_rasterise", lambda *a, **k: np.zeros_like(real(*a, **k))):
        bg = S.render(class_idx, seed, size)
    return img, bg, seen[0]


def scores(out: np.ndarray, img: np.ndarray, bg: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    o, f, b = (x[region].astype(np.float64) for x in (out, img, bg))
    mse = float(((o - b) ** 2).mean())
    psnr = 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))
    ghost = float((np.linalg.norm(o - f, axis=1) < np.linalg.norm(o - b, axis=1)).mean())
    return psnr, ghost


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=50000, help="first image seed (images seed .. seed+n-1)")
    ap.add_argument("--model", default="demo")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    from varedit_plugins.remove import remove

    from varedit import VarEditPipeline
    from varedit import processing as P
    pipe = VarEditPipeline.from_pretrained(args.model, device="cpu")
    ed = pipe.editor
    S = pipe.image_size

    methods: dict[str, Any] = {}
    for g in (0.0, 2.0, 4.0):
        for lab in ("none", "auto"):
            methods[f"remove, label {lab}, grow {g:g}"] = (lambda img, m, i, g=g, lab=lab: remove(
                ed, img, m, grow=g, label=lab, seed=i, output_type="np").image)
        methods[f"OpenCV Navier-Stokes, grow {g:g}"] = (lambda img, m, i, g=g: cv2.inpaint(
            img, P.grow_mask(m, g).astype(np.uint8), 5, cv2.INPAINT_NS))

    # two masks of each object: all of it (coverage > 0, the anti-aliased rim included), and the tight
    # one a segmentation or a careful brush gives (coverage > 0.5: the rim is left outside)
    kinds = {"whole object": 0.0, "tight": 0.5}
    res: dict[tuple[str, str], list[tuple[float, float]]] = {(k, m): [] for k in kinds for m in methods}
    t0 = time.perf_counter()
    for i in range(args.n):
        img, bg, cov = render_with_background(i % 10, args.seed + i, S)
        scored = cov > 0  # scores always over every pixel the object touches
        for kind, thr in kinds.items():
            for name, fn in methods.items():
                res[(kind, name)].append(scores(fn(img, cov > thr, args.seed + i), img, bg, scored))
        if (i + 1) % 10 == 0:
            print(f"{i + 1}/{args.n} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    secs = time.perf_counter() - t0
    print(f"{args.n} images ({S} px, classes round-robin, seeds {args.seed}..{args.seed + args.n - 1}), "
          f"model {pipe.name}, {secs:.0f} s; PSNR (dB) / ghost over every pixel the object touches")
    print("| method | " + " | ".join(f"{k}: PSNR | {k}: ghost" for k in kinds) + " |")
    print("|---|" + "---|---|" * len(kinds))
    for name in methods:
        cells = []
        for kind in kinds:
            a = np.array(res[(kind, name)])
            cells += [f"{a[:, 0].mean():.2f}", f"{a[:, 1].mean():.3f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
