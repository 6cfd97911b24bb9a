"""The quality report runs end to end (tiny numbers; the real report is `varedit eval`)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from varedit.evaluation.classifier import train_classifier
from varedit.evaluation.metrics import frechet_distance, kid, outside_change, paired_se, psnr, ring_labels, ssim
from varedit.evaluation.quality import eval_mask, run_eval, select_variants, to_markdown


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


def test_outside_change_bands_have_the_known_answer():
    # the mask is the left 10 columns; column x (>= 10) lies x - 9 px from it and changes by x - 9 levels in
    # the green channel only, so each band's mean and max are known; the mask's own pixels change by 255
    before = np.zeros((20, 40, 3), np.uint8)
    after = before.copy()
    mask = np.zeros((20, 40), bool)
    mask[:, :10] = True
    after[:, :10] = 255
    after[:, 10:, 1] = np.arange(1, 31, dtype=np.uint8)
    ch = outside_change(before, after, mask)
    assert list(ch) == ring_labels() == ["0-4", "4-8", "8-16", "16-32", ">32"]
    expect = {"0-4": (2.5, 4, 4), "4-8": (6.5, 8, 4), "8-16": (12.5, 16, 8), "16-32": (23.5, 30, 14)}
    for band, (mean, mx, cols) in expect.items():
        assert ch[band] == {"mean": mean, "max": mx, "pixels": 20 * cols}, band
    assert ch[">32"]["pixels"] == 0 and np.isnan(ch[">32"]["mean"])
    # nothing changed outside: zeros; an empty mask puts every pixel in the last band
    assert all(v["max"] == 0 for v in outside_change(before, np.where(mask[..., None], after, before), mask).values()
               if v["pixels"])
    assert outside_change(before, after, np.zeros_like(mask))[">32"]["pixels"] == 800
    assert outside_change(before[..., 0], after[..., 1], mask, edges=(1,))[">1"]["max"] == 30


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
    for key in ("official", "default", "opencv-telea", "default-closed-loop", "default-pushpull-prefill", "lanczos",
                "default-n4-ranked", "default-true-class", "oracle-recon-in-hole", "telea-tokenised"):
        assert key in md
    assert "No independent judge" in md and "kid" not in res["inpainting"]["box"]["default"]
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
    # harmonize makes the known pixels exact, so the feather is a no-op while it is on; off, it is not
    same = ("fd", "hole_psnr", "class_kept")
    assert all(box["default-feather-0"][k] == box["default"][k] for k in same)
    assert box["no-harmonize-feather-0"]["fd"] != box["no-harmonize-feather-2x"]["fd"]
    # ranked candidates share the samples of the unranked ones (the same known-region drift)
    assert box["default-n4-ranked"]["known_drift"] == box["default-n4-first"]["known_drift"]


def test_variant_selection():
    names = lambda level: [v.name for v in select_variants(level)]  # noqa: E731
    assert names("none") == ["default"] and "official" in names("all")
    assert {"default-closed-loop", "default-unconditional", "default-cfg-5", "default-n4-ranked",
            "default-telea-prefill"} <= set(names("defaults"))
    assert "default-grow-1" not in names("defaults") and "default-grow-1" in names("all")
    assert names(True) == names("all") and names(False) == names("none")


def test_kid_and_ssim():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 16))
    same = rng.normal(size=(64, 16))
    far = rng.normal(loc=0.5, size=(64, 16))
    k0, se0, loo0 = kid(same, real)
    k1, se1, loo1 = kid(far, real)
    assert len(loo0) == 8 and se0 > 0 and se1 > 0
    assert abs(k0) < 3 * se0 + 1e-3          # unbiased: about zero for the same distribution
    assert k1 > k0 + 3 * paired_se(loo1, loo0)
    assert paired_se(loo0, loo0) == 0
    x = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    assert abs(ssim(x, x) - 1) < 1e-9 and ssim(x, 255 - x) < 0.5
    m = np.zeros((32, 32), bool)
    m[8:16, 8:16] = True
    y = x.copy()
    y[m] = 0
    grown = np.zeros((32, 32), bool)
    grown[2:22, 2:22] = True  # the hole and the SSIM window's reach around it
    assert ssim(y, x, ~grown) > 0.999 and ssim(y, x, m) < 0.5


# ---- the paste-back feather study (varedit eval --real --feather) ------------------------------------------
def test_parse_feathers_and_photo_masks():
    from varedit.evaluation.realphoto import parse_feathers, photo_mask
    assert parse_feathers("0, 4,8.0,token,4,TOKEN") == ["0", "4", "8", "token"]
    for bad in ("", "x", "-1", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_feathers(bad)
    rng = np.random.default_rng(0)
    for _ in range(10):
        box = photo_mask("objects", (400, 600), rng)
        ys, xs = np.nonzero(box)
        assert 100 <= np.ptp(ys) + 1 <= 200 and 150 <= np.ptp(xs) + 1 <= 300 and box.sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
        strokes = photo_mask("strokes", (400, 600), rng)
        ys, xs = np.nonzero(strokes)
        assert 0 < strokes.mean() < 0.25 and np.ptp(ys) < 200 and np.ptp(xs) < 300
    with pytest.raises(ValueError, match="unknown mask"):
        photo_mask("outpaint", (40, 40), rng)


def test_feather_study_pastes_back_as_the_editor_does(tiny_pipeline):
    """Each edit is pasted back with every feather from one decode; the change outside stops at the feather."""
    from varedit import processing as P
    from varedit.evaluation.realphoto import feather_markdown, run_feather_study
    rng = np.random.default_rng(3)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8), (0, 0), 3)
    res = run_feather_study(tiny_pipeline, judge=None, feathers="0,3,token", n=3, photos=[("noise", photo)],
                            examples=1)
    token = tiny_pipeline.editor.half_token_px((200, 150))
    assert res["photos"][0]["token_px"] == token and set(res["feather"]) == {"objects", "strokes"}
    for rows in res["feather"].values():
        assert [(r["harmonize"], r["feather"]) for r in rows] == [(h, f) for h in (True, False) for f in ("0", "3", "token")]
        by = {(r["harmonize"], r["feather"]): r["outside"] for r in rows}
        for h in (True, False):
            assert all(v["worst"] == 0 for v in by[h, "0"].values())  # a hard paste changes nothing outside
            assert by[h, "3"]["0-4"]["worst"] > 0 and all(by[h, "3"][b]["worst"] == 0 for b in ("4-8", "8-16"))
        assert by[False, "token"]["4-8"]["worst"] > 0
    assert res["examples"]["objects"][0].shape[1] == 4 * res["examples"]["objects"][0].shape[0]
    assert "half a token" in feather_markdown(res) and "**strokes**" in feather_markdown(res)
    # read back from its JSON (keys sorted as text), the bands keep their order, nearest first
    import json
    back = json.loads(json.dumps({k: v for k, v in res.items() if k != "examples"}, sort_keys=True))
    assert "| 0-4 px | 4-8 px | 8-16 px | 16-32 px | >32 px |" in feather_markdown(back)
    # the study's paste-back of an edit decoded without one is the Editor's own paste-back (to the level)
    m = np.zeros((150, 200), bool)
    m[40:90, 60:130] = True
    whole = tiny_pipeline.editor.inpaint(photo, m, seed=1, paste_back=False, output_type="np").image
    own = tiny_pipeline.editor.inpaint(photo, m, seed=1, feather=5, output_type="np").image
    ours = P.compose(photo, whole.astype(np.float32) / 255, P.feather(m, 5))
    assert np.abs(ours.astype(int) - own.astype(int)).max() <= 1


def test_eval_feather_option_errors_in_one_line(tmp_path):
    from click.testing import CliRunner

    from varedit.cli import main
    from varedit.data.photos import photos_available
    r = CliRunner().invoke(main, ["eval", "--feather", "0,4", "--judge", "none", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "--real" in r.output and "Traceback" not in r.output
    if photos_available():
        for bad, say in ((["--feather", "0,x"], "feather 'x'"), (["--feather", "4", "--masks", "box"], "--masks")):
            r = CliRunner().invoke(main, ["eval", "--real", *bad, "--judge", "none", "-o", str(tmp_path)])
            assert r.exit_code == 2 and say in r.output and "Traceback" not in r.output, r.output
    assert not any(tmp_path.iterdir())
