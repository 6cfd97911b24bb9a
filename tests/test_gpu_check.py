"""`.ci/gpu-check`, the one-call script for a session lent the GPU: at toy sizes on the CPU, every step runs
within its limit and the summary holds what README's performance section needs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run_small(script: str, flag: str, tmp_path: Path) -> tuple[Path, list[dict]]:
    """Run ``.ci/<script>`` at toy sizes (``flag=1``) into tmp_path/out: the output folder and its steps."""
    env = {**os.environ, flag: "1", "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    r = subprocess.run([str(REPO / ".ci" / script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "out"
    return out, [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]


def test_gpu_check_runs_every_step_and_summarises(tmp_path):
    out, steps = _run_small("gpu-check", "GPU_CHECK_SMALL", tmp_path)
    assert [s["step"] for s in steps] == ["env", "gpu_tests", "train_vqvae", "train_var", "bench_d16",
                                          "bench_d16_bf16", "bench_d30"]
    assert all(s["rc"] == 0 and s["seconds"] <= s["limit"] for s in steps), steps
    assert sum(s["limit"] for s in steps) <= 570  # one device call (600 s) with room to start and fetch
    summary = json.loads((out / "summary.json").read_text())
    assert summary["small"] is True and summary["env"]["torch"] and summary["env"]["missing_modules"] == []
    for kind in ("vq", "var"):
        assert summary["training"][kind]["images_per_s"] > 0 and summary["training"][kind]["parameters"] > 0
    assert summary["training"]["var"]["flops_per_image"] > 6 * summary["training"]["var"]["parameters"]
    d16 = summary["bench"]["bench_d16"]
    assert {r["backend"] for r in d16["rows"]} == {"eager", "fast", "onnx"} and {r["batch"] for r in d16["rows"]} == {1}
    assert all(r["token_agreement_with_eager"] == 1.0 for r in d16["rows"])  # fp32: exact on every backend
    assert summary["bench"]["bench_d16_bf16"]["settings"]["precision"] == "bf16"
    assert {r["batch"] for r in summary["bench"]["bench_d30"]["rows"]} == {2}
    # the checkout is left as it was: nothing written outside OUT
    assert not (REPO / "gpu-out").exists()


def test_gpu_train_demo_trains_packs_and_fits_one_call(tmp_path):
    """`.ci/gpu-train-demo` (demo v3 in one device call) at toy sizes: probe, continue from the probe's
    checkpoint for the measured step count, pack a loadable fp16 model; its limits fit one call."""
    out, steps = _run_small("gpu-train-demo", "GPU_TRAIN_SMALL", tmp_path)
    assert [s["step"] for s in steps] == ["env", "vq_probe", "vq_train", "var_probe", "var_train", "pack"]
    assert all(s["rc"] == 0 and s["seconds"] <= s["limit"] for s in steps), steps
    assert sum(s["limit"] for s in steps) <= 570
    summary = json.loads((out / "summary.json").read_text())
    assert summary["small"] is True and summary["steps_chosen"]["vq"] > 2 and summary["steps_chosen"]["var"] > 2
    for kind in ("vq", "var"):  # the full run continued the probe (its metrics start at the probe's steps)
        rows = [json.loads(x) for x in (out / "runs" / kind / "metrics.jsonl").read_text().splitlines() if x.strip()]
        assert max(r["step"] for r in rows) == summary["steps_chosen"][kind]
    from varedit.fileformat import load_file
    var, vae = load_file(out / "demo_v3.pt")
    assert var.cfg.depth == 1 and tuple(vae.patch_nums) == (1, 2, 4)
    assert not list(out.rglob("ckpt_*.pt"))  # checkpoints stay behind
    assert not (REPO / "gpu-out").exists()
