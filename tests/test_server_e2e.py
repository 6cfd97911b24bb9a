"""`varedit serve` as a real process (uvicorn on a free loopback port): access control off loopback, the
editor driven in a real browser (Debian's Chromium through Playwright), and a load test."""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install -e '.[server]')")
pytest.importorskip("uvicorn", reason="the server extra is not installed (pip install -e '.[server]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[test]')")

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(*args: str, host: str = "127.0.0.1"):
    """Start `varedit serve` on a free port; yields (base URL, process, output lines so far)."""
    port = free_port()
    cmd = [sys.executable, "-c", "from varedit.cli import main; main()", "serve", "--host", host,
           "--port", str(port), "--device", "cpu", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                reader.join(2)
                pytest.fail(f"varedit serve exited with {proc.returncode}:\n{''.join(lines)}")
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"varedit serve did not answer within 120 s:\n{''.join(lines)}")
            time.sleep(0.2)
        yield base, proc, lines
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def png_bytes(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return b.getvalue()


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


# ---- access control ----------------------------------------------------------------------------------
def test_serve_off_loopback_makes_and_requires_a_token():
    with serve(host="0.0.0.0") as (base, _, lines):
        out = "".join(lines)
        assert "varedit serve: model demo (torch, 128 px)" in out, out
        token_line = next(ln for ln in lines if "access token (made for this run" in ln)
        token = token_line.rsplit(":", 1)[1].strip()
        assert len(token) >= 24 and f"?token={token}" in out
        r = httpx.get(f"{base}/api/v1/model")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert httpx.post(f"{base}/api/v1/generate", json={"class": 1}).status_code == 401
        assert httpx.get(f"{base}/api/v1/model", headers={"Authorization": f"Bearer {token}"}).json()["auth"]
        r = httpx.post(f"{base}/api/v1/generate?format=png", json={"class": "star", "seed": 3},
                       headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert r.status_code == 200 and r.headers["x-seed"] == "3" and r.content[:4] == b"\x89PNG"


# ---- the editor in a real browser ----------------------------------------------------------------------
def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


def test_editor_in_a_real_browser(tmp_path, paint_stroke):
    browser_exe = chromium_path()
    if browser_exe is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium; .ci/run installs it when it runs as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    from varedit.data.synthetic import render
    src = render(8, seed=5, size=192)  # a crescent on a textured background, the demo model's domain
    Image.fromarray(src).save(tmp_path / "in.png")

    with serve() as (base, proc, _), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_exe, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.add_init_script("window.cspViolations = []; document.addEventListener('securitypolicyviolation', "
                             "(e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));")
        page.goto(base + "/")
        page.wait_for_selector("body[data-ready='1']", timeout=30000)
        assert "demo" in page.text_content("#model-name")

        # open the image and paint a stroke
        page.set_input_files("#file", str(tmp_path / "in.png"))
        page.wait_for_function("() => window.varedit.stage.image && window.varedit.stage.width === 192")
        page.keyboard.press("]")  # brush 24 -> 30
        assert page.evaluate("window.varedit.stage.brush") == 30
        paint_stroke(page, (60, 80), (90, 88), (120, 84), (140, 96))
        count = "(() => { let n = 0; for (const v of window.varedit.stage.maskBinary()) n += v; return n; })()"
        painted = page.evaluate(count)
        assert 2000 < painted < 8000, painted
        page.keyboard.press("Control+z")
        assert page.evaluate(count) == 0
        page.keyboard.press("Control+Shift+z")
        assert page.evaluate(count) == painted
        mask = np.array(page.evaluate("Array.from(window.varedit.stage.maskBinary())"), bool).reshape(192, 192)
        ys, xs = np.nonzero(mask)
        assert 40 < xs.mean() < 120 and 70 < ys.mean() < 100  # where the stroke went

        # sampling settings, run, preview while it works, ranked gallery
        page.uncheck("#seed-random")
        page.fill("#seed", "7")
        page.fill("#n", "3")
        page.click("#run")
        page.wait_for_function("() => window.varedit.stats.previews >= 1", timeout=60000)
        page.wait_for_selector("#gallery .cand:nth-child(3) img", timeout=60000)
        assert page.get_attribute("#preview", "src").startswith("data:image/png;base64,")
        assert page.evaluate("window.varedit.stats.previews") == 6  # one per scale
        scores = page.evaluate("window.varedit.state.run.scores")
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
        assert "seed 7" in page.text_content("#run-info")

        # hold Tab: the original
        page.keyboard.down("Tab")
        assert page.evaluate("window.varedit.stage.shown().img === window.varedit.stage.overlay.compare.img")
        page.keyboard.up("Tab")
        assert page.evaluate("window.varedit.stage.shown().img === window.varedit.stage.overlay.img")
        page.screenshot(path=str(tmp_path / "editor.png"))
        if os.environ.get("VAREDIT_SCREENSHOT"):
            shutil.copy(tmp_path / "editor.png", os.environ["VAREDIT_SCREENSHOT"])

        # download the best candidate: far from the stroke it is the input, bit for bit
        with page.expect_download() as dl:
            page.click("#download")
        got = np.asarray(Image.open(dl.value.path()).convert("RGB"))
        assert got.shape == src.shape
        import cv2
        feather = 0.5 * 16 * 192 / 128  # half a token, in image pixels (the server's default)
        near = cv2.dilate(mask.astype(np.uint8), np.ones((2 * int(feather) + 5,) * 2, np.uint8)) > 0
        assert np.array_equal(got[~near], src[~near])
        assert np.abs(got[mask].astype(int) - src[mask]).mean() > 2  # the stroke was regenerated

        # what the page sent is what the API makes of it: same image, mask, seed -> same pixels
        r = httpx.post(f"{base}/api/v1/inpaint", files={"image": ("in.png", (tmp_path / "in.png").read_bytes()),
                                                        "mask": ("m.png", png_bytes(mask.astype(np.uint8) * 255))},
                       data={"seed": "7", "n": "3", "label": "auto"}, timeout=120)
        api_best = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"))
        assert np.array_equal(api_best, got)

        # re-roll the detail of the result, then keep it: the history holds both runs
        page.fill("#reroll-k", "4")
        page.click("#gallery .cand:nth-child(1) button.reroll")
        page.wait_for_function("() => window.varedit.stats.results >= 2", timeout=60000)
        page.wait_for_function("() => window.varedit.state.run.title.startsWith('Re-roll')")
        assert page.evaluate("window.varedit.state.run.settings.keep_scales") == 4
        page.click("#gallery .cand:nth-child(1) button:has-text('Use')")
        assert page.evaluate("window.varedit.stage.overlay") is None
        assert page.locator("#history .hist").count() == 2
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#history .hist").count() == 2  # kept across a reload (IndexedDB)

        assert page.evaluate("window.cspViolations") == []  # the editor works under its content security policy

        # the API's docs render from the package's own files (no network here)
        page.goto(base + "/docs")
        page.get_by_text("/api/v1/infer-label").first.wait_for(timeout=30000)
        assert page.locator(".opblock").count() >= 8
        assert page.evaluate("window.cspViolations") == []
        browser.close()
        assert not problems, problems
        assert proc.poll() is None


# ---- load ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_load_on_loopback():
    """8 concurrent clients, 240 requests (a third of them model jobs): every answer is a 200 or an
    intended 503 with Retry-After, the queue never holds more than its limit, memory stays bounded."""
    from varedit.data.synthetic import render
    clients, per_client, queue_size = 8, 30, 4
    img = base64.b64encode(png_bytes(render(3, seed=1, size=128))).decode()
    bodies = {
        "generate": lambda i: {"class": i % 10, "seed": i},
        "inpaint": lambda i: {"image": img, "box": [32, 32, 96, 96], "label": "star", "seed": i},
        "infer-label": lambda i: {"image": img, "box": [32, 32, 96, 96]},
    }
    with serve("--queue-size", str(queue_size), "--max-candidates", "2") as (base, proc, _):
        with httpx.Client(timeout=120) as c:  # warm up: the first run of each task allocates
            for t, b in bodies.items():
                assert c.post(f"{base}/api/v1/{t}", json=b(0)).status_code == 200
        rss0 = rss_mb(proc.pid)
        t0 = time.monotonic()

        def client(k: int) -> list[tuple[str, int, float, str | None]]:
            out = []
            with httpx.Client(timeout=120) as c:
                for j in range(per_client):
                    i = k * per_client + j
                    kind = ("model", "health", "generate", "model", "inpaint", "infer-label")[i % 6]
                    t = time.monotonic()
                    if kind in ("model", "health"):
                        r = c.get(f"{base}/api/v1/{kind}")
                    else:
                        r = c.post(f"{base}/api/v1/{kind}", json=bodies[kind](i))
                    dt = time.monotonic() - t
                    if r.status_code == 200 and kind in ("generate", "inpaint"):
                        json.loads(r.content)["images"][0]  # a complete answer
                    out.append((kind, r.status_code, dt, r.headers.get("retry-after")))
                    if r.status_code == 503:
                        time.sleep(min(float(r.headers["retry-after"]), 0.25))
            return out

        with ThreadPoolExecutor(clients) as ex:
            results = [x for part in ex.map(client, range(clients)) for x in part]
        wall = time.monotonic() - t0
        stats = httpx.get(f"{base}/api/v1/health").json()["queue"]
        rss1, hwm = rss_mb(proc.pid), rss_mb(proc.pid, "VmHWM")

    codes = {}
    for kind, code, _, _ in results:
        codes[(kind, code)] = codes.get((kind, code), 0) + 1
    jobs = [r for r in results if r[0] not in ("model", "health")]
    ok_jobs = [r for r in jobs if r[1] == 200]
    lat = sorted(r[2] for r in ok_jobs)
    report = {"requests": len(results), "wall_s": round(wall, 1), "codes": {f"{k}:{c}": n for (k, c), n in codes.items()},
              "jobs_ok": len(ok_jobs), "jobs_503": len(jobs) - len(ok_jobs),
              "job_latency_p50_s": round(lat[len(lat) // 2], 2), "job_latency_p95_s": round(lat[int(len(lat) * .95)], 2),
              "rss_mb_before": round(rss0), "rss_mb_after": round(rss1), "rss_mb_peak": round(hwm), "queue": stats}
    print("\nload test:", json.dumps(report))
    assert len(results) == clients * per_client
    assert all(code == 200 or (code == 503 and ra and int(ra) >= 1) for _, code, _, ra in results), codes
    assert all(code == 200 for kind, code, _, _ in results if kind in ("model", "health"))
    assert len(ok_jobs) >= 20 and stats["failed"] == 0
    assert stats["peak_waiting"] <= queue_size and stats["rejected"] == len(jobs) - len(ok_jobs)
    assert rss1 - rss0 < 300, report
    assert wall < 600
