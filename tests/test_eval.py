"""The quality report runs end to end (tiny numbers; the real report is `varedit eval`)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from varedit.evaluation.classifier import train_classifier
from varedit.evaluation.metrics import frechet_distance, kid, outside_change, paired_se, psnr, ring_labels, ssim
from varedit.evaluation.quality import (BASELINE_ROWS, MASK_KINDS, TASK_PREFILL, combine_markdown, eval_mask,
                                       finish_fills, merge_reports, row_plan, run_eval, select_variants, to_markdown)


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


def test_report_runs(tiny_pipeline, shape_classifier):
    """The expensive run on one mask kind with no ablations: a well-formed report (its rendering is tested on
    a canned report below, which rows repeat which fill on :func:`row_plan`)."""
    import json
    res = run_eval(tiny_pipeline, classifier=shape_classifier, n=8, n_ref=30, n_gen_per_class=1, batch=8,
                   n_upscale=2, upscale_keeps=(4,), ablations="none", masks=("box",))
    assert list(res["inpainting"]) == ["box"] and res["default_prefill"] == {"box": "ns"}
    box = res["inpainting"]["box"]
    assert set(box) == {*BASELINE_ROWS, "default"}
    assert np.isfinite(box["default"]["known_drift"]) and box["default"]["known_drift"] >= 0
    assert all("known_drift" not in r for k, r in box.items() if k != "default")  # only the model's rows drift
    assert all(0 <= r["class_kept"] <= 1 and np.isfinite(r["fd"]) for r in box.values())
    # the anchors: real held-out images are closer to the reference set than anything generated
    assert res["anchors"]["originals_fd"] < box["default"]["fd"]
    assert res["anchors"]["classifier_acc_originals"] >= 0.9  # the bundled classifier reads real shapes
    assert 0 <= res["label_inference"]["box"] <= 1 and 0 <= res["generation"]["recognised"] <= 1
    assert len(res["upscale"]["token_agreement_per_scale"]) == len(tiny_pipeline.var.patch_nums)
    assert set(res["upscale"]["rows"]) == {"lanczos", "varedit-keep4"} and res["upscale"]["n"] == 2
    md = to_markdown(res)
    assert "No independent judge" in md and "kid" not in box["default"] and "| default |" in md
    # the report written as JSON (keys sorted) renders the same tables
    assert to_markdown(json.loads(json.dumps(res, sort_keys=True))) == md


def test_rows_that_repeat_a_setting_repeat_its_fill():
    """Which rows `run_eval` measures and which repeat an earlier row's fill (the same plan, guidance and
    post-processing), and which share samples (they differ only after decoding)."""
    assert TASK_PREFILL == {"box": "ns", "strokes": "ns", "outpaint": "pushpull"}
    for kind in MASK_KINDS:
        plan = {v.name: (v, kw, cfg, same) for v, kw, cfg, same in row_plan(select_variants("all"), kind, 3.0)}
        assert plan["default"][3] is None and plan["default"][1]["prefill"] == TASK_PREFILL[kind]
        repeats = {name for name, (_, _, _, same) in plan.items() if same is not None}
        # each mask kind's default row uses its task's prefill: the matching prefill row is the same fill
        assert repeats == {f"default-{TASK_PREFILL[kind]}-prefill"}, (kind, repeats)
        assert plan[f"default-{TASK_PREFILL[kind]}-prefill"][3] == "default"
        assert plan["default-cfg-5"][2] == 5.0 and plan["default"][2] == plan["default-feather-0"][2] == 3.0
        assert "default-n4-ranked" in plan if kind == "box" else "default-n4-ranked" not in plan
        assert ("default-coverage-0.5" in plan) == (kind == "strokes")

        def sampling(name: str) -> tuple:
            v, kw, cfg, _ = plan[name]
            return v.sampling_key(kw, cfg)
        # harmonize and the feather act after decoding: one set of samples for all of them
        assert sampling("default") == sampling("default-feather-0") == sampling("no-harmonize-feather-2x")
        assert sampling("default") != sampling("default-cfg-5") and sampling("default") != sampling("default-unconditional")
        if kind == "box":  # ranked candidates share the samples of the unranked ones
            assert sampling("default-n4-ranked") == sampling("default-n4-first") != sampling("default")
    assert [v.name for v, *_ in row_plan(select_variants("none"), "outpaint", 3.0)] == ["default"]
    # another prefill for the default mode (the real-photo report's): the row of that prefill repeats it
    plan = row_plan(select_variants("defaults"), "box", 3.0, prefill="pushpull")
    assert [(v.name, same) for v, _, _, same in plan if same] == [("default-pushpull-prefill", "default")]


def test_finish_fills_ranks_harmonizes_and_feathers():
    """Harmonize makes the decoded canvas equal the input on every known pixel, so the feather changes
    nothing while it is on; off, the feather blends the decoder's known pixels in near the hole."""
    from varedit.evaluation.quality import Variant
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    m = np.zeros((32, 32), bool)
    m[8:24, 8:24] = True
    decoded = [np.clip(img / 255 + rng.normal(0, 0.1, img.shape), 0, 1).astype(np.float32) for _ in range(3)]
    fill = lambda **kw: finish_fills(Variant("x", {}, **kw), decoded, [0.0, 2.0, 1.0], [img], [m], 3.0)[0]  # noqa: E731
    hard = fill(feather=0.0)
    assert np.array_equal(hard[~m], img[~m]) and not np.array_equal(hard[m], img[m])
    assert np.array_equal(fill(), hard) and np.array_equal(fill(feather=2.0), hard)
    soft = fill(harmonize=False)
    assert not np.array_equal(soft, fill(harmonize=False, feather=0.0))
    ring = np.zeros_like(m)
    ring[5:27, 5:27] = True
    assert np.array_equal(soft[~ring], img[~ring]) and not np.array_equal(soft[ring & ~m], img[ring & ~m])
    # candidates: the most likely one (log-likelihood 2.0: the second) when ranking, else the first
    ranked = finish_fills(Variant("x", {}, candidates=3), decoded, [0.0, 2.0, 1.0], [img], [m], 3.0)[0]
    first = finish_fills(Variant("x", {}, candidates=3, rank=False), decoded, [0.0, 2.0, 1.0], [img], [m], 3.0)[0]
    assert np.array_equal(first, hard)
    assert np.array_equal(ranked, finish_fills(Variant("x", {}), decoded[1:], [0.0], [img], [m], 3.0)[0])


def _canned(seed: int, judge: bool = True) -> dict:
    """A report as `run_eval` writes it, with round numbers: two mask kinds, its rows out of order."""
    def row(fd: float, kid: float, drift: float | None = None) -> dict:
        r = {"fd": fd, "class_kept": 0.75, "hole_psnr": 20 + fd, "hole_ssim": 0.5, "hole_colour": 3.0}
        if drift is not None:
            r["known_drift"] = drift
        if judge:  # leave-one-group-out values that differ by a constant between rows: paired s.e. 0
            ok = [1, 0] * 4
            r.update(kid=kid, kid_se=5e-4, kid_loo=[kid + 1e-4 * i for i in range(8)], judge_fd=None,
                     judge_class_kept=0.5, judge_class_ok=ok, paired=0.25, paired_i=[0.25] * 8)
        return r
    res = {"n": 8, "n_ref": 24, "seed": seed, "model": "tiny", "image_size": 64,
           "anchors": {"originals_fd": 1.5, "vqvae_recon_fd": 4.25, "vqvae_recon_psnr": 25.5,
                       "classifier_acc_originals": 1.0},
           "generation": {"recognised": 0.625, "fd": 9.5, "per_class": 2, "cfg": 4.0, "top_k": 900, "top_p": 0.95},
           "editing_sampling": {"cfg": 3.0, "top_k": 0, "top_p": 0.9},
           "label_inference": {"box": 0.5, "outpaint": 0.25}, "default_prefill": {"box": "ns", "outpaint": "pushpull"},
           "inpainting": {"box": {"default-cfg-5": row(5.0, 0.015, 1.0), "default": row(2.0, 0.012, 0.5),
                                  "opencv-telea": row(3.0, 0.02)},
                          "outpaint": {"default": row(6.0, 0.03, 0.25), "opencv-ns": row(7.0, 0.04)}},
           "upscale": {"token_agreement_per_scale": [1.0, 0.5, 0.25], "n": 2,
                       "rows": {"lanczos": {"psnr": 30.0, "fd": 2.0}, "varedit-keep2": {"psnr": 28.0, "fd": 1.75}}}}
    if judge:
        res["judge"] = {"network": "efficientnet-lite0", "weights": "ImageNet", "features": "pooled stage 7",
                        "kid_groups": 8, "probe_train_images": 20, "probe_acc_originals": 0.9}
        res["anchors"].update(originals_kid=0.001, originals_kid_se=2e-4, originals_judge_class_kept=0.9,
                              vqvae_recon_kid=0.004, vqvae_recon_kid_se=3e-4, vqvae_recon_judge_class_kept=0.8)
    return res


def test_report_tables_on_a_canned_report():
    import json
    md = to_markdown(_canned(1)).splitlines()
    assert md[0].startswith("Model `tiny`, 8 held-out images (seed 1), reference set 24 images")
    assert md[2].startswith("Independent judge: efficientnet-lite0 (ImageNet), pooled stage 7 as features")
    assert "over 8 groups" in md[2] and "trained on 20 real shapes (accuracy on the real held-out images 90%)" in md[2]
    assert "| originals (held-out vs reference) | 1.0 ± 0.2 | 90% | 1.50 | |" in md
    assert "| VQVAE reconstruction | 4.0 ± 0.3 | 80% | 4.25 | 25.50 |" in md
    assert any(x.startswith("Class-conditional samples: **62.5%** recognised") and "own FD 9.50 (cfg 4.0, top-k 900, "
               "top-p 0.95)" in x for x in md)
    assert any(x.endswith("inferred class correct: box 50%, outpaint 25%.") for x in md)
    i = md.index("**box** (the default mode's prefill: ns, as its task's)")
    assert md[i + 2].startswith("| method | KID x1e3 | judge class kept | paired | own FD |")
    # baselines first, then the variants in their listed order, whatever the order they were stored in
    assert md[i + 4:i + 7] == ["| opencv-telea | 20.0 ± 0.5 | 50% | 0.250 | 3.00 | 75% | 23.00 | 0.500 | 3.0 |  |",
                               "| default | 12.0 ± 0.5 | 50% | 0.250 | 2.00 | 75% | 22.00 | 0.500 | 3.0 | 0.50 |",
                               "| default-cfg-5 | 15.0 ± 0.5 | 50% | 0.250 | 5.00 | 75% | 25.00 | 0.500 | 3.0 | 1.00 |"]
    assert "**outpaint** (the default mode's prefill: pushpull, as its task's)" in md
    assert "token agreement per scale (image vs its Lanczos down-up copy): 100%, 50%, 25%" in md
    assert md[-2:] == ["| lanczos | 30.00 | 2.00 |", "| varedit-keep2 | 28.00 | 1.75 |"]
    # read back from JSON (keys sorted): the same tables
    assert to_markdown(json.loads(json.dumps(_canned(1), sort_keys=True))) == to_markdown(_canned(1))
    # without the judge: no judge columns, and the report says why
    plain = to_markdown(_canned(1, judge=False)).splitlines()
    assert plain[2].startswith("No independent judge (its packages are missing")
    i = plain.index("**box** (the default mode's prefill: ns, as its task's)")
    assert plain[i + 2].startswith("| method | own FD | own class kept |")
    assert "| default | 2.00 | 75% | 22.00 | 0.500 | 3.0 | 0.50 |" in plain


def test_combined_report_on_canned_reports():
    """Seeds side by side, each row against the default with its paired standard error."""
    md = combine_markdown([_canned(1), _canned(2)]).splitlines()
    assert md[0].startswith("Model `tiny`; 2 runs (seeds 1, 2: other held-out images, masks and samples), 8 / 8 images")
    assert "| default | 12.0 / 12.0 |  | 50% / 50% |  | 0.250 / 0.250 | 2.0 / 2.0 | 22.00 / 22.00 |" in md
    assert ("| default-cfg-5 | 15.0 / 15.0 | +3.0 ± 0.0 / +3.0 ± 0.0 | 50% / 50% | +0 ± 0 / +0 ± 0 | 0.250 / 0.250 "
            "| 5.0 / 5.0 | 25.00 / 25.00 |") in md
    assert "| opencv-ns | 40.0 / 40.0 | +10.0 ± 0.0 / +10.0 ± 0.0 | 50% / 50% | +0 ± 0 / +0 ± 0 | 0.250 / 0.250 " \
           "| 7.0 / 7.0 | 27.00 / 27.00 |" in md
    assert md.count("### seed 1") == md.count("### seed 2") == 1
    # one run per mask kind of the same seed: merged into one report
    a, b = _canned(3), _canned(3)
    a["inpainting"].pop("outpaint")
    b["inpainting"].pop("box")
    merged = merge_reports([a, b])
    assert len(merged) == 1 and list(merged[0]["inpainting"]) == ["box", "outpaint"]
    b["n"] = 16
    with pytest.raises(ValueError, match="reports of seed 3 differ in n"):
        merge_reports([a, b])


def test_train_classifier_is_seeded():
    clf_a, info = train_classifier(n=32, steps=2, batch=8, size=32, n_heldout=20)
    clf_b, _ = train_classifier(n=32, steps=2, batch=8, size=32, n_heldout=20)
    assert info["train_images"] == 32 and info["heldout_images"] == 20 and 0 <= info["heldout_accuracy"] <= 1
    sa, sb = clf_a.state_dict(), clf_b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    clf_c, _ = train_classifier(n=32, steps=2, batch=8, size=32, n_heldout=20, seed=7)
    assert not torch.equal(clf_c.state_dict()["head.weight"], sa["head.weight"])


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
