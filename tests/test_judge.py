"""The independent judge (EfficientNet-Lite0 from its package): real weights, real features, tiny sets."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from varedit.cli import main
from varedit.data.synthetic import SyntheticShapes
from varedit.evaluation import judge as J

pytestmark = pytest.mark.skipif(not J.judge_available(), reason='needs the eval extra: pip install "varedit[eval]"')


@pytest.fixture(scope="module")
def judge():
    torch.set_num_threads(1)
    return J.EfficientNetJudge(batch=16)


@pytest.fixture(scope="module")
def shapes():
    ds = SyntheticShapes(60, seed=777, size=64)
    return [ds[i][0] for i in range(60)], np.array([ds[i][1] for i in range(60)])


def test_weights_load_safely_and_fully():
    state = torch.load(J.weights_path(), map_location="cpu", weights_only=True)  # no pickle code is run
    assert len(state) > 200 and state["_fc.weight"].shape == (1000, 1280)
    net = J._build_network()
    assert not net.training
    # the ImageNet classifier is alive: a plain grey image and noise are classified differently and confidently
    x = torch.stack([torch.zeros(3, 224, 224), torch.randn(3, 224, 224).clamp(-1, 1)])
    with torch.no_grad():
        p = net(x).softmax(1)
    assert p.argmax(1)[0] != p.argmax(1)[1] and float(p.max()) > 0.05


def test_features_and_paired_distance(judge, shapes):
    imgs, _ = shapes
    a = judge.features(imgs[:6], maps=True)
    assert a.pooled.shape == (6, 1280) and np.isfinite(a.pooled).all()
    assert [m.shape[-1] for m in a.maps] == [56, 28, 14, 7, 7]
    again = judge.features(imgs[:6], maps=True)
    np.testing.assert_allclose(again.pooled, a.pooled, rtol=1e-5, atol=1e-5)  # deterministic
    assert np.allclose(J.paired_distance(a, again), 0, atol=1e-3)
    import cv2
    blurred = judge.features([cv2.GaussianBlur(im, (0, 0), 2.0) for im in imgs[:6]], maps=True)
    others = judge.features(imgs[6:12], maps=True)
    d_blur, d_other = J.paired_distance(blurred, a), J.paired_distance(others, a)
    assert (d_blur > 0.01).all()
    assert d_blur.mean() < d_other.mean()  # a blurred copy is nearer its original than another image is


def test_probe_reads_the_class(judge, shapes):
    imgs, labels = shapes
    probe = J.train_probe(judge, imgs[:40], labels[:40], 10)
    acc = float((probe.predict(judge.features(imgs[40:]).pooled) == labels[40:]).mean())
    assert acc >= 0.5  # 4 training images per class; chance is 0.1


def test_report_with_the_judge(tiny_pipeline, shape_classifier, judge, tmp_path):
    """One mask kind, no ablations, every judge column filled (the tables are tested on canned reports in
    test_eval.py)."""
    from varedit.evaluation.quality import combine_markdown, run_eval, to_markdown, write_report
    res = run_eval(tiny_pipeline, classifier=shape_classifier, judge=judge, n=8, n_ref=16, n_probe=20, batch=8,
                   kid_groups=4, ablations="none", masks=("box",), generation=False, n_upscale=0)
    assert list(res["inpainting"]) == ["box"] and "upscale" not in res and "generation" not in res
    box = res["inpainting"]["box"]
    for name in ("opencv-telea", "opencv-ns", "oracle-recon-in-hole", "telea-tokenised", "default"):
        r = box[name]
        assert np.isfinite(r["kid"]) and r["kid_se"] > 0 and len(r["kid_loo"]) == 4  # one per group
        assert 0 <= r["judge_class_kept"] <= 1 and r["paired"] > 0 and len(r["paired_i"]) == 8
        assert r["judge_fd"] is None  # 8 samples cannot fit a 1280-dimensional covariance
    assert res["judge"]["kid_groups"] == 4 and res["judge"]["probe_train_images"] == 20
    a = res["anchors"]
    assert a["originals_kid"] < a["vqvae_recon_kid"]  # the tokeniser's blur is visible to the judge
    md = to_markdown(res)
    assert "Independent judge: efficientnet-lite0" in md and "KID x1e3" in md
    write_report(res, tmp_path / "a")
    r = CliRunner().invoke(main, ["eval", "--combine", str(tmp_path / "a"), "--combine", str(tmp_path / "a"),
                                  "-o", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "c" / "eval.md").read_text()
    assert "ΔKID vs default" in text and "| opencv-telea |" in text
    assert text == combine_markdown([json.loads((tmp_path / "a" / "eval.json").read_text())] * 2)


def test_cli_says_how_to_install_the_judge(monkeypatch, tmp_path):
    # the package hidden as an uninstalled one is (an import of a None entry raises ImportError)
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    r = CliRunner().invoke(main, ["eval", "-o", str(tmp_path)])
    assert r.exit_code != 0
    assert "pip install 'varedit[eval]'" in r.output and "--judge none" in r.output
    assert "Traceback" not in r.output
