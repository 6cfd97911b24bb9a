"""Class edits measured (part of ``varedit eval``): does ``edit(image, box, class)`` turn the boxed object
into the asked class?

Each held-out synthetic image gets the box around its object (the object's bounding box grown by an
eighth of the image side, clipped: what a user would draw) and a target class other than its own,
drawn with a seeded generator.  The edited image is read by the project's shape classifier (the
bundled one; its accuracy on real held-out images is in docs/quality.md): the box holds the whole
object, so the class of the image is the class of what is inside the box.  Success = the classifier
reads the target class.  (Classifying the box's crop alone would be unfair: the classifier was trained
on whole images and misreads many real objects from a crop.)
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


def object_box(coverage: np.ndarray, grow: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the pixels covered more than half by the object, grown by ``grow`` px."""
    ys, xs = np.nonzero(coverage > 0.5)
    S = coverage.shape[0]
    return (max(0, int(xs.min()) - grow), max(0, int(ys.min()) - grow),
            min(S, int(xs.max()) + 1 + grow), min(S, int(ys.max()) + 1 + grow))


def class_edit_eval(pipe: Any, classifier: Any, n: int, *, seed: int, data_seed: int,
                    say: Callable[[str], None] | None = None, judge: Any = None, probe: Any = None,
                    j_ref: np.ndarray | None = None, variants: dict[str, dict[str, Any]] | None = None,
                    kid_groups: int = 8) -> dict[str, Any]:
    """``n`` edits of ``SyntheticShapes(n, seed=data_seed)``'s images (see the module docstring).

    ``variants``: name -> extra ``edit`` keywords, each measured on the same images, boxes, targets and
    seeds (default: the defaults alone, ``{"default": {}}``).  With the independent ``judge`` (its
    linear ``probe`` and reference features ``j_ref``) each row also gets the probe's reading of the
    asked class and the KID of the edited images to real ones.  The first variant's row is returned at
    the top level (the keys the report has always had), every row under ``"rows"``.
    """
    from ..data.synthetic import NUM_CLASSES, SyntheticShapes, item_seed, render_with_mask
    from .classifier import predict
    S = pipe.image_size
    K = min(pipe.num_classes, NUM_CLASSES)  # the shape classes the classifier knows
    ds = SyntheticShapes(n, seed=data_seed, size=S, num_classes=K)
    rng = np.random.default_rng([seed, 0xED17])
    items = []
    for i in range(n):
        label = i % ds.num_classes
        img, cov = render_with_mask(label, item_seed(data_seed, i), S)
        target = int((label + rng.integers(1, K)) % K)  # never the image's own class
        items.append((img, object_box(cov, S // 8), label, target))
    t = np.asarray([it[3] for it in items])
    lab = np.asarray([it[2] for it in items])
    areas = [(b[2] - b[0]) * (b[3] - b[1]) / S ** 2 for _, b, _, _ in items]
    rows: dict[str, dict[str, Any]] = {}
    for name, kw in (variants or {"default": {}}).items():
        outs = [np.asarray(pipe.edit(img, box, target, seed=seed + i, **kw).image)
                for i, (img, box, _, target) in enumerate(items)]
        pred = predict(classifier, outs)
        row: dict[str, Any] = {
            "n": n, "settings": dict(kw), "success": float((pred == t).mean()),
            "still_original_class": float((pred == lab).mean()), "box_area_mean": float(np.mean(areas)),
            "data_seed": data_seed,
            "per_class": {int(c): float((pred[t == c] == c).mean()) for c in range(K) if (t == c).any()}}
        if judge is not None and probe is not None:
            from .metrics import kid
            jf = judge.features(outs).pooled
            row["judge_success"] = float((probe.predict(jf) == t).mean())
            if j_ref is not None:
                row["kid"], row["kid_se"], _ = kid(jf, j_ref, groups=kid_groups)
        rows[name] = row
        if say is not None:
            extra = f", judge's probe {row['judge_success']:.3f}" if "judge_success" in row else ""
            say(f"class edit {name}: {row['success']:.3f} read as the asked class by the own classifier{extra} ({n} edits)")
    first = next(iter(rows.values()))
    return {**first, "rows": rows}
