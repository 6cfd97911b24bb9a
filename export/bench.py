"""onnxruntime vs torch eager for the same generation work: ``python -m varedit_onnx.bench``.

For each model (the tiny golden models; the bundled demo model when it is installed) the script
exports an fp32 ONNX model with a fixed batch, then times, in one process and alternately:

* onnxruntime: ``OnnxVAR.sample`` (the unrolled sampler graph) and ``OnnxVAR.decode``;
* torch eager: ``masked_sample(..., uniforms=..., decode=True)`` with the same uniforms,

on the same N images (same labels, same noise), and checks that both draw the same tokens.  Reported:
ms per image (median over repetitions) for sampling, decoding and both, and torch / onnxruntime.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger("varedit_onnx.bench")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GOLDEN = Path(os.environ.get("VAREDIT_GOLDEN_DIR", REPO.parent / "shared" / "golden" / "official_var_a"))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median_ms(fn: Callable[[], Any], reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def _load_models(which: str, golden: Path) -> tuple[Any, Any]:
    from varedit.registry import DEMO_FILE, build_var, build_vqvae, configs_from_official_ctor, load_file, \
        read_weights
    if which == "tiny":
        c = json.loads((golden / "config.json").read_text())
        vae_cfg, var_cfg = configs_from_official_ctor(c["vqvae_ctor"], c["var_ctor"],
                                                      c.get("vqvae_ctor_implicit_defaults"))
        var = build_var(var_cfg, read_weights(golden / "var.pth"))
        return var, build_vqvae(vae_cfg, read_weights(golden / "vae.pth"))
    var, vae = load_file(DEMO_FILE)
    return var, vae


def bench_model(name: str, var: Any, vae: Any, *, n: int, batch: int, reps: int, threads: int, cfg: float,
                top_k: int, top_p: float, opset: int, seed: int = 0) -> dict[str, Any]:
    import torch

    from varedit.editing.noise import portable_uniforms
    from varedit.editing.sampler import masked_sample

    from .exporter import export_onnx
    from .runtime import OnnxVAR

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="varedit_onnx_bench_") as d:
        t0 = time.perf_counter()
        man = export_onnx(var, vae, d, batch=batch, opset=opset, check=False, name=name)
        export_s = time.perf_counter() - t0
        # no spinning: idle onnxruntime workers would busy-wait while torch is being timed
        rt = OnnxVAR.from_dir(d, providers="cpu", threads=threads, spinning=False).load()
        pns = rt.patch_nums
        labels = np.random.default_rng(seed).integers(0, rt.num_classes, size=n).astype(np.int64)
        u = portable_uniforms(seed, n, pns)
        lab_t = torch.from_numpy(labels)
        u_t = [torch.from_numpy(x) for x in u]

        def ort_sample() -> Any:
            return rt.sample(labels, uniforms=u, cfg=cfg, top_k=top_k, top_p=top_p)

        def torch_run(decode: bool) -> list[Any]:
            out = []
            with torch.no_grad():
                for s in range(0, n, batch):  # the same batches as the fixed-batch export
                    out.append(masked_sample(var, vae, lab_t[s:s + batch], cfg=cfg, top_k=top_k, top_p=top_p,
                                             uniforms=[x[s:s + batch] for x in u_t], decode=decode))
            return out

        tok_o, f_hat_o, _ = ort_sample()
        ref = torch_run(True)
        tok_t = [np.concatenate([r.idx_per_scale[si].numpy() for r in ref]) for si in range(len(pns))]
        agree = sum(int((a == b).sum()) for a, b in zip(tok_o, tok_t)) / sum(a.size for a in tok_t)
        img_t = np.concatenate([r.img_B3HW.numpy() for r in ref])
        img_diff = float(np.abs(rt.decode(f_hat_o) - img_t).max())

        f_hat_t = torch.from_numpy(f_hat_o)
        res = {
            "ort_sample_ms": _median_ms(ort_sample, reps),
            "ort_decode_ms": _median_ms(lambda: rt.decode(f_hat_o), reps),
            "torch_sample_ms": _median_ms(lambda: torch_run(False), reps),
        }

        def torch_decode() -> None:
            with torch.no_grad():
                for s in range(0, n, batch):
                    vae.fhat_to_img(f_hat_t[s:s + batch]).add(1).mul(0.5)

        res["torch_decode_ms"] = _median_ms(torch_decode, reps)
    per = {k.replace("_ms", "_ms_per_image"): round(v / n, 3) for k, v in res.items()}
    ort_total = (res["ort_sample_ms"] + res["ort_decode_ms"]) / n
    torch_total = (res["torch_sample_ms"] + res["torch_decode_ms"]) / n
    return {
        "model": name, "depth": var.depth, "width": var.C, "vocab": var.V, "scales": list(pns),
        "image_size": vae.image_size, "images": n, "batch": batch, "threads": threads, "reps": reps,
        "cfg": cfg, "top_k": top_k, "top_p": top_p, "opset": opset, "export_s": round(export_s, 1),
        "graph_export_s": man["export"]["seconds"], **per,
        "ort_generate_ms_per_image": round(ort_total, 3), "torch_generate_ms_per_image": round(torch_total, 3),
        "speedup_torch_over_ort": round(torch_total / ort_total, 3),
        "speedup_sample_only": round(res["torch_sample_ms"] / res["ort_sample_ms"], 3),
        "token_agreement": agree, "image_max_abs_diff": img_diff,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m varedit_onnx.bench", description=__doc__.splitlines()[0])
    p.add_argument("--golden-dir", type=Path, default=DEFAULT_GOLDEN, help="tiny golden models (config.json, *.pth)")
    p.add_argument("--models", default="tiny,demo", help="comma list: tiny, demo (demo is skipped if not installed)")
    p.add_argument("--n", type=int, default=8, help="images per timed run")
    p.add_argument("--batch", type=int, default=8, help="export batch (and torch batch)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (median)")
    # one thread by default: on a small shared machine torch's OpenMP workers stall when the cores are
    # busy (2 threads measured 20-40x slower than 1 here), which would measure the load, not the runtimes
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--top-k", type=int, default=900)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--opset", type=int, default=23)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("torch", "onnxscript", "onnx_ir", "varedit_onnx.exporter", "varedit_onnx.session"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import onnxruntime
    import torch

    from varedit import __version__
    from varedit.registry import DEMO_FILE
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "varedit_onnx.bench", *(argv or sys.argv[1:])]),
        "device": f"CPU: {_cpu_name()}, {os.cpu_count()} logical cores",
        "platform": platform.platform(), "python": platform.python_version(), "varedit": __version__,
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    results = []
    for which in [m.strip() for m in a.models.split(",") if m.strip()]:
        if which == "demo" and not DEMO_FILE.is_file():
            log.info("demo model not installed (%s): skipped", DEMO_FILE)
            continue
        if which not in ("tiny", "demo"):
            p.error(f"unknown model {which!r}")
        var, vae = _load_models(which, a.golden_dir)
        r = bench_model(which, var, vae, n=a.n, batch=a.batch, reps=a.reps, threads=a.threads, cfg=a.cfg,
                        top_k=a.top_k, top_p=a.top_p, opset=a.opset)
        log.info("%s: onnxruntime %.2f ms/image (sample %.2f + decode %.2f), torch eager %.2f ms/image "
                 "(sample %.2f + decode %.2f): torch/onnxruntime = %.2fx (sampling alone %.2fx); "
                 "token agreement %.4f", which, r["ort_generate_ms_per_image"], r["ort_sample_ms_per_image"],
                 r["ort_decode_ms_per_image"], r["torch_generate_ms_per_image"], r["torch_sample_ms_per_image"],
                 r["torch_decode_ms_per_image"], r["speedup_torch_over_ort"], r["speedup_sample_only"],
                 r["token_agreement"])
        results.append(r)
    # a shared machine's load changes timings: record it at both ends
    env["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out = {"environment": env, "results": results}
    log.info("%s", json.dumps(out, indent=2))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
