"""The ONNX runtime's parts on their own (no export, no onnxruntime session): the fixed-batch runner,
the input checks, the scorer-or-sampler choice and the sum over kept cells."""
from __future__ import annotations

import numpy as np
import pytest

from varedit_onnx import runtime
from varedit_onnx.errors import OnnxRuntimeError
from varedit_onnx.feeds import Feeds, run_in_batches
from varedit_onnx.manifest import ExportInfo, read_manifest
from varedit_onnx.scoring import prefer_scorer, score_with_sampler

INFO = ExportInfo(name="t", image_size=16, patch_nums=(1, 2, 4), vocab_size=8, Cvae=3, num_classes=5,
                  class_names=None, batch=2, precision="fp32")


class _Recorder:
    """A session that returns its rows doubled and remembers every feed."""

    def __init__(self) -> None:
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, feeds):
        self.feeds.append(dict(feeds))
        return {"y": feeds["x"] * 2, "first": feeds["x"][:, :1]}


def test_run_in_batches_pads_the_last_run_with_its_last_row_and_drops_the_padding():
    x = np.arange(10, dtype=np.int64).reshape(5, 2)
    rec = _Recorder()
    out = run_in_batches(rec, {"x": x}, 2, {"k": np.array(3)})
    assert [f["x"].shape for f in rec.feeds] == [(2, 2)] * 3
    assert np.array_equal(rec.feeds[-1]["x"], [[8, 9], [8, 9]])  # row 4 and its copy
    assert all(int(f["k"]) == 3 for f in rec.feeds)
    assert np.array_equal(out["y"], x * 2) and np.array_equal(out["first"], x[:, :1])
    with pytest.raises(OnnxRuntimeError, match="no rows"):
        run_in_batches(rec, {"x": x[:0]}, 2)


def test_feeds_broadcast_and_name_what_is_wrong():
    f = Feeds(INFO)
    keep = f.per_scale("keep_maps", [np.ones(1), np.ones((1, 2, 2)), np.zeros((3, 16))], 3, np.bool_)
    assert [k.shape for k in keep] == [(3, 1), (3, 4), (3, 16)] and keep[1].all() and not keep[2].any()
    with pytest.raises(OnnxRuntimeError, match=r"keep_maps\[1\] has shape \[2, 4\]; expected \(3 or 1, 4\)"):
        f.per_scale("keep_maps", [np.ones(1), np.ones((2, 4)), np.ones(16)], 3, np.bool_)
    with pytest.raises(OnnxRuntimeError, match=r"tokens must be in \[0, 8\)"):
        f.tokens("tokens", [np.zeros(1), np.zeros(4), np.full(16, 8)], 1)
    assert f.labels(5).tolist() == [5]  # the unconditional class
    with pytest.raises(OnnxRuntimeError, match="class index 6 is out of range"):
        f.labels([1, 6])
    feeds = f.sampler([1, 2], seed=0, cfg=2.0, top_k=3, top_p=0.5)
    assert feeds.batched["label"].tolist() == [1, 2] and feeds.batched["uniform_2"].shape == (2, 16)
    assert set(feeds.batched) >= {"keep_0", "known_2", "pool_w_1"} and "pool_w_2" not in feeds.batched
    assert feeds.fixed["guidance"].shape == (3, 2) and int(feeds.fixed["top_k"]) == 3
    assert float(feeds.fixed["top_p_threshold"]) == pytest.approx(0.5) and not feeds.fixed["closed_loop"]


def test_the_scorer_is_preferred_once_warm_or_when_the_sampler_would_run_often():
    assert not prefer_scorer(set(), N=1, batch=2, num_classes=5)     # cold, 5 sampler runs
    assert prefer_scorer({"sampler"}, N=1, batch=2, num_classes=5)   # warm
    assert prefer_scorer({"scorer"}, N=1, batch=2, num_classes=5)
    assert prefer_scorer(set(), N=3, batch=2, num_classes=16)        # 2 chunks x 16 classes = 32 runs


def test_the_sampler_score_sums_the_kept_cells_per_class():
    keep = [np.array([[True], [False]]), np.array([[True, False], [True, True]])]

    def cells(c):  # cell log-probability -c everywhere
        return [np.full((2, 1), -c, np.float32), np.full((2, 2), -c, np.float32)]

    assert score_with_sampler(cells, keep, 3).tolist() == [[0, -2, -4], [0, -2, -4]]


def test_the_runtime_still_offers_every_name_it_offered():
    for name in ("OnnxVAR", "SampleOutput", "OnnxRuntimeError", "read_manifest", "verify_files", "check_manifest",
                 "guidance_weights", "guidance_t", "top_p_threshold", "sha256_file", "portable_uniforms", "FORMAT",
                 "FORMAT_VERSION", "MANIFEST", "GRAPHS", "OPTIONAL_GRAPHS", "OrtSession", "check_provider_choice"):
        assert hasattr(runtime, name), name
    assert runtime.read_manifest is read_manifest and runtime.OnnxRuntimeError is OnnxRuntimeError
