"""The quality report runs end to end (tiny numbers; the real report is `varedit eval`)."""
from __future__ import annotations

import numpy as np

from varedit.evaluation.classifier import train_classifier
from varedit.evaluation.metrics import frechet_distance, psnr
from varedit.evaluation.quality import eval_mask, run_eval, to_markdown


def test_frechet_distance_properties():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8))
    b = rng.normal(size=(500, 8))
    c = rng.normal(loc=1.0, size=(500, 8))
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, b) < 0.5 < frechet_distance(a, c)
    assert 7 < frechet_distance(a, c) < 9  # mean shift of 1 in 8 dims
    x = np.zeros((4, 4))
    assert psnr(x, x) == float("inf") and abs(psnr(x, x + 255) - 0) < 1e-9


def test_masks():
    rng = np.random.default_rng(0)
    assert eval_mask("box", 64, rng).mean() == 0.25
    assert eval_mask("outpaint", 64, rng)[:, 32:].all()
    s = eval_mask("strokes", 64, rng)
    assert 0.02 < s.mean() < 0.8


def test_report_runs(tiny_pipeline):
    clf, info = train_classifier(n=200, steps=10, batch=16)
    assert 0 <= info["heldout_accuracy"] <= 1
    res = run_eval(tiny_pipeline, classifier=clf, n=8, n_ref=30, n_gen_per_class=1, batch=8, n_upscale=2,
                   upscale_keeps=(4,))
    md = to_markdown(res)
    for key in ("official", "default", "opencv-telea", "default-closed-loop", "default-pushpull-prefill", "lanczos"):
        assert key in md
    assert set(res["inpainting"]) == {"box", "strokes", "outpaint"}
    # each mask kind's default row uses its task's prefill: the matching prefill row is the same fill
    assert res["default_prefill"] == {"box": "ns", "strokes": "ns", "outpaint": "pushpull"}
    assert res["inpainting"]["outpaint"]["default"] == res["inpainting"]["outpaint"]["default-pushpull-prefill"]
    assert res["inpainting"]["box"]["default"] == res["inpainting"]["box"]["default-ns-prefill"]
    assert len(res["upscale"]["token_agreement_per_scale"]) == len(tiny_pipeline.var.patch_nums)
    box = res["inpainting"]["box"]
    assert all(np.isfinite(r["known_drift"]) and r["known_drift"] >= 0 for k, r in box.items() if "default" in k)
    # the anchors: real held-out images are closer to the reference set than anything generated
    assert res["anchors"]["originals_fd"] < box["default"]["fd"]
