"""`varedit bench`: the format of its report, on a tiny random configuration (timings are not asserted:
speed targets are met in benchmarks, not in timed tests)."""
from __future__ import annotations

import json
import math
import statistics

from click.testing import CliRunner

from varedit.benchmark import SCHEMA, BenchConfig, RandomModel, cli_breakdown, run_bench, speedups
from varedit.cli import main

TINY = RandomModel(depth=1, patch_nums=(1, 2, 4), num_classes=3, vocab_size=32, vae_ch=32)


def _peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def test_report_format_and_token_agreement():
    before = _peak_rss_mb()
    doc = run_bench(BenchConfig(model=TINY, batches=(1, 2), reps=2, warmup=0, cfg=2.0, top_k=8, top_p=0.9))
    after = _peak_rss_mb()
    assert doc["schema"] == SCHEMA and doc["device"]["type"] == "cpu" and doc["device"]["threads"] >= 1
    assert doc["model"]["kind"] == "random" and doc["model"]["depth"] == 1 and doc["model"]["image_size"] == 64
    rows = doc["results"]
    assert {(r["workload"], r["backend"], r["batch"]) for r in rows} == {
        (w, b, n) for w in ("generate", "inpaint", "inpaint-uncond", "label") for b in ("eager", "fast")
        for n in (1, 2)}
    for r in rows:
        # the reported time is the median of the repetitions, per batch and per image
        assert len(r["reps_ms"]) == 2 and min(r["reps_ms"]) > 0
        assert abs(r["ms_per_batch"] - statistics.median(r["reps_ms"])) <= 1e-3
        assert abs(r["ms_per_image"] * r["batch"] - r["ms_per_batch"]) < 1e-2
        assert abs(r["images_per_s"] - 1e3 / r["ms_per_image"]) < 0.01 * r["images_per_s"] + 1e-3
        # on the CPU, the process's peak resident memory while the row was measured
        assert before - 0.1 <= r["peak_memory_mb"] <= after + 0.1
        # the fast path draws exactly the eager path's tokens from the same noise
        expected = None if r["workload"] == "label" else 1.0
        assert r["token_agreement_with_eager"] == expected
    assert "generate b2 fast/eager" in doc["speedups"] and "inpaint-uncond/generate b1 fast" in doc["speedups"]
    json.dumps(doc)  # serialisable as it is


def test_speedups_arithmetic():
    rows = [{"workload": "generate", "batch": 1, "backend": "eager", "ms_per_image": 30.0},
            {"workload": "generate", "batch": 1, "backend": "fast", "ms_per_image": 20.0},
            {"workload": "inpaint-uncond", "batch": 1, "backend": "fast", "ms_per_image": 12.0}]
    assert speedups(rows) == {"generate b1 fast/eager": 1.5, "inpaint-uncond/generate b1 fast": 0.6}


def test_cli_writes_json(tmp_path):
    res = CliRunner().invoke(main, ["bench", "--random", "1", "--scales", "1,2,4", "--vae-ch", "32", "--vocab", "32",
                                    "--classes", "3", "--batch", "1", "--workloads", "generate", "--reps", "1",
                                    "--warmup", "0", "-o", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["command"].startswith("varedit") and len(doc["results"]) == 2 and doc["settings"]["decode"] is True
    # --no-decode: the sampler alone, same tokens on both paths
    res = CliRunner().invoke(main, ["bench", "--random", "1", "--scales", "1,2,4", "--vae-ch", "32", "--vocab", "32",
                                    "--classes", "3", "--batch", "1", "--workloads", "generate,inpaint", "--reps", "1",
                                    "--warmup", "0", "--no-decode", "-o", str(tmp_path / "n.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "n.json").read_text())
    assert doc["settings"]["decode"] is False and len(doc["results"]) == 4
    assert all(r["token_agreement_with_eager"] == 1.0 for r in doc["results"])
    # an existing file is replaced only with --overwrite, checked before anything is measured
    stamp = (tmp_path / "b.json").read_bytes()
    res = CliRunner().invoke(main, ["bench", "--random", "1", "--workloads", "generate", "-o", str(tmp_path / "b.json")])
    assert res.exit_code == 1 and "exists: add --overwrite" in res.output
    assert (tmp_path / "b.json").read_bytes() == stamp
    res = CliRunner().invoke(main, ["bench", "--backends", "eager,tpu"])
    assert res.exit_code == 2 and "tpu" in res.output


def test_cli_call_breakdown():
    """One real `varedit inpaint` in a fresh process: every phase is recorded and they add up."""
    b = cli_breakdown(image_size=128, box=(32, 32, 96, 96))
    for k in ("wall_s", "startup_s", "validate_s", "load_s", "read_s", "label_s", "tokenize_s", "sample_s",
              "decode_s", "post_s", "edit_s", "write_s"):
        assert b[k] >= 0, k
    parts = b["startup_s"] + b["validate_s"] + b["load_s"] + b["edit_s"] + b["exit_s"]
    assert abs(parts - b["wall_s"]) < 0.05
    inner = ("read_s", "label_s", "tokenize_s", "sample_s", "decode_s", "post_s", "write_s")
    assert sum(b[k] for k in inner) <= b["edit_s"] + 1e-3


def test_outpaint_strategies_report(demo_pipeline):
    from varedit.benchmark import outpaint_strategies
    rep = outpaint_strategies(demo_pipeline, n=2, strategies=("crop",), n_ref=20)
    assert set(rep["strategies"]) == {"crop"} and rep["n_ref"] == 20 and rep["n"] == 2 and rep["model"] == "demo"
    assert rep["canvas"] == "256x256 from 128x256"  # twice the demo's 128 px, the left half kept
    for row in rep["strategies"].values():
        # two outpainted images are never the 20 real ones' distribution: a distance well above zero
        assert math.isfinite(row["s_per_image"]) and row["s_per_image"] > 0 and math.isfinite(row["fd"]) and row["fd"] > 1
