"""Time an `varedit export web` folder in Chromium (headless, WebAssembly) next to Python's onnxruntime.

    python export/web/measure.py SITE                        # plain static server: one thread
    python export/web/measure.py SITE --isolated --threads 2  # COOP/COEP headers: WebAssembly threads
    python export/web/measure.py SITE --python EXPORT_DIR     # the same inpaint on Python's onnxruntime

The job: the demo domain's 128-px test image (a crescent), a 60 x 40 box, label inferred, one candidate,
seed 7; three runs (the first pays for warming the sessions). Prints one JSON line. Needs Chromium and
the `playwright` package (pip install -e ".[test]").
"""
from __future__ import annotations

import argparse
import base64
import functools
import io
import json
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def job() -> tuple[np.ndarray, np.ndarray]:
    from varedit.data.synthetic import render
    mask = np.zeros((128, 128), bool)
    mask[40:80, 30:90] = True
    return render(8, seed=5, size=128), mask


def png(a: np.ndarray) -> str:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return "data:image/png;base64," + base64.b64encode(b.getvalue()).decode()


def browser(site: str, isolated: bool, threads: int, runs: int) -> dict:
    from playwright.sync_api import sync_playwright

    class Handler(SimpleHTTPRequestHandler):
        def end_headers(self) -> None:
            if isolated:
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            super().end_headers()

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=site))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    img, mask = job()
    out: dict = {"where": "chromium", "isolated": isolated}
    try:
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=shutil.which("chromium") or "chromium", args=ARGS)
            out["chromium"] = b.version
            page = b.new_page()
            t = time.perf_counter()
            page.goto(f"http://127.0.0.1:{srv.server_address[1]}/?threads={threads}")
            page.wait_for_function("() => window.varedit && window.varedit.ready", timeout=120000)
            info = page.evaluate("() => window.varedit.ready")
            out.update(ready_s=round(time.perf_counter() - t, 2), threads=info["threads"],
                       cross_origin_isolated=info["cross_origin_isolated"], precision=info["precision"])
            for k in range(runs):
                ms = page.evaluate("async ([i, m]) => { const t = performance.now(); "
                                   "await window.varedit.inpaint(i, m, {seed: 7}); return performance.now() - t; }",
                                   [png(img), png(mask.astype(np.uint8) * 255)])
                out[f"inpaint_{k + 1}_s"] = round(ms / 1000, 2)
            r = page.evaluate("([i, m]) => window.varedit.run('inpaint', i, m, {seed: 7, debug: true})",
                              [png(img), png(mask.astype(np.uint8) * 255)])
            out["parts_s"] = {k[:-3]: round(v / 1000, 2) for k, v in r["debug"].items()
                              if k.endswith("_ms") and k != "total_ms"}
            b.close()
    finally:
        srv.shutdown()
    return out


def python(export_dir: str, threads: int, runs: int) -> dict:
    from varedit_onnx.runtime import OnnxVAR
    t = time.perf_counter()
    ed = OnnxVAR.from_dir(export_dir, providers="cpu", threads=threads).editor()
    out: dict = {"where": "python onnxruntime", "threads": threads, "open_s": round(time.perf_counter() - t, 2)}
    img, mask = job()
    for k in range(runs):
        t = time.perf_counter()
        r = ed.inpaint(img, mask, seed=7, n=1)
        out[f"inpaint_{k + 1}_s"] = round(time.perf_counter() - t, 2)
    out["parts_s"] = {k[:-2]: round(v, 2) for k, v in (r.timings or {}).items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", help="a folder written by `varedit export web`")
    ap.add_argument("--isolated", action="store_true", help="send COOP/COEP headers (WebAssembly threads)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--python", metavar="EXPORT_DIR", help="time Python's onnxruntime on this export instead")
    a = ap.parse_args()
    print(json.dumps(python(a.python, a.threads, a.runs) if a.python else browser(a.site, a.isolated, a.threads, a.runs)))


if __name__ == "__main__":
    main()
