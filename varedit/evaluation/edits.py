"""Class edits measured (part of ``varedit eval``): does ``edit(image, box, class)`` turn the boxed object
into the asked class?

Each held-out synthetic image gets the box around its object (the object's bounding box grown by an
eighth of the image side, clipped: what a user would draw) and a target class other than its own,
drawn with a seeded generator.  The edited image is read by the project's shape classifier (the
bundled one, 100% accurate on real held-out images): the box holds the whole object, so the class of
the image is the class of what is inside the box.  Success = the classifier reads the target class.
(Classifying the box's crop alone would be unfair: the classifier reads only about 65% of real
objects correctly from a crop, since it was trained on whole images.)
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
                    say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``n`` edits of ``SyntheticShapes(n, seed=data_seed)``'s images (see the module docstring)."""
    from ..data.synthetic import NUM_CLASSES, SyntheticShapes, item_seed, render_with_mask
    from .classifier import predict
    S = pipe.image_size
    K = min(pipe.num_classes, NUM_CLASSES)  # the shape classes the classifier knows
    ds = SyntheticShapes(n, seed=data_seed, size=S, num_classes=K)
    rng = np.random.default_rng([seed, 0xED17])
    outs, targets, labels, areas = [], [], [], []
    for i in range(n):
        label = i % ds.num_classes
        img, cov = render_with_mask(label, item_seed(data_seed, i), S)
        box = object_box(cov, S // 8)
        target = int((label + rng.integers(1, K)) % K)  # never the image's own class
        outs.append(np.asarray(pipe.edit(img, box, target, seed=seed + i).image))
        targets.append(target)
        labels.append(label)
        areas.append((box[2] - box[0]) * (box[3] - box[1]) / S ** 2)
    t, lab = np.asarray(targets), np.asarray(labels)
    pred = predict(classifier, outs)
    res = {"n": n, "success": float((pred == t).mean()), "still_original_class": float((pred == lab).mean()),
           "box_area_mean": float(np.mean(areas)), "data_seed": data_seed,
           "per_class": {int(c): float((pred[t == c] == c).mean()) for c in range(K) if (t == c).any()}}
    if say is not None:
        say(f"class edit: {res['success']:.3f} read as the asked class ({n} edits)")
    return res
