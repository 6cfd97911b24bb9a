"""`varedit export web`: the editor as a static folder running the exported graphs in the browser
(onnxruntime-web, WebAssembly), driven in Debian's Chromium through Playwright.

The page is served by `python -m http.server` on 127.0.0.1 and every request is logged: nothing may leave
the folder. Its JavaScript API must choose the same tokens as Python's onnxruntime runtime for the same
uniforms (the same plan, the same seed), and leave pixels far from the mask as they were.

The tiny golden models are exported once and kept in pytest's cache (keyed by the weights and the
exporter's source), since an export takes minutes on a small CPU; the browser tests take about half a
minute after that. They skip when Chromium, Playwright, the golden data or onnxruntime-web's npm files
(`npm install` in export/web) are missing.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def ort_web_dir() -> Path | None:
    from varedit.commands.web import _dist, ort_candidates
    for p in ort_candidates():
        d = _dist(p)
        if d is not None:
            return d
    return None


def cli(*args: str):
    from varedit.cli import main
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def tiny_export(request, golden_dir, golden_models) -> Path:
    """The tiny golden models exported (batch 1, fp32: what `export web` writes; not the session's batch-2
    export), cached between runs, keyed by the weights and every source the exported graphs come from."""
    pytest.importorskip("onnxscript")
    h = hashlib.sha256()
    sources = [REPO / "varedit" / d for d in ("models", "editing")] + [REPO / "export"]
    for p in (golden_dir / "var.pth", golden_dir / "vae.pth", *sorted(f for d in sources for f in d.glob("*.py"))):
        h.update(p.read_bytes())
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider: export per session
    root = Path(cache.mkdir("varedit-web-export")) if cache is not None else request.getfixturevalue(
        "tmp_path_factory").mktemp("varedit-web-export")
    d = root / h.hexdigest()[:16]
    if not (d / "manifest.json").is_file():
        from varedit_onnx.exporter import export_onnx
        var, vae = golden_models
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        export_onnx(var, vae, tmp, batch=1, name="tiny", class_names=[f"c{i}" for i in range(var.num_classes)],
                    check=False)
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
        for old in d.parent.iterdir():  # exports of older weights or exporters
            if old != d:
                shutil.rmtree(old, ignore_errors=True)
    return d


@pytest.fixture(scope="module")
def site(tiny_export, tmp_path_factory) -> Path:
    if ort_web_dir() is None:
        pytest.skip("onnxruntime-web's npm files are missing: run `npm install` in export/web (the CI script does)")
    out = tmp_path_factory.mktemp("web") / "site"
    r = cli("export", "web", "-o", str(out), "--from", str(tiny_export))
    assert r.exit_code == 0, r.output
    return out


# ---- the command --------------------------------------------------------------------------------------
def test_export_web_without_onnxruntime_web_is_one_line(tmp_path):
    r = cli("export", "web", "-o", str(tmp_path / "site"), "--from", str(tmp_path), "--ort-dir", str(tmp_path / "none"))
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: onnxruntime-web's files") and "npm install" in lines[0]
    assert not (tmp_path / "site").exists()


def test_export_web_refuses_a_folder_that_is_no_export(tmp_path):
    if ort_web_dir() is None:
        pytest.skip("onnxruntime-web's npm files are missing: run `npm install` in export/web")
    (tmp_path / "empty").mkdir()
    r = cli("export", "web", "-o", str(tmp_path / "site"), "--from", str(tmp_path / "empty"))
    assert r.exit_code == 1 and r.output.startswith("Error:") and "manifest.json" in r.output
    assert not (tmp_path / "site").exists() and [p.name for p in tmp_path.iterdir()] == ["empty"]  # no leftovers


def test_export_web_writes_a_self_contained_folder(site, tiny_export, tmp_path):
    names = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert {"index.html", "style.css", "README.txt", "js/app.js", "js/varedit-web.js", "js/backend-runtime.js",
            "ort/ort.wasm.bundle.min.mjs", "ort/ort-wasm-simd-threaded.wasm", "ort/NOTICE.txt",
            "model/manifest.json"} <= set(names)
    assert not [n for n in names if n.startswith("ort/") and n.endswith(".wasm") and "jsep" in n]  # only the wasm needed
    html = (site / "index.html").read_text()
    assert '<meta name="varedit-backend" content="runtime">' in html and "<script>" not in html
    m = json.loads((site / "model" / "manifest.json").read_text())
    assert {m["graphs"][g]["file"] for g in m["graphs"]} <= set(n[6:] for n in names if n.startswith("model/"))
    # an existing, non-empty folder is never overwritten
    r = cli("export", "web", "-o", str(site), "--from", str(tiny_export))
    assert r.exit_code == 1 and "not empty" in r.output
    # without the scorer: one graph less, still a valid export
    r = cli("export", "web", "-o", str(tmp_path / "lean"), "--from", str(tiny_export), "--no-scorer")
    assert r.exit_code == 0, r.output
    lean = json.loads((tmp_path / "lean" / "model" / "manifest.json").read_text())
    assert "scorer" not in lean["graphs"] and not (tmp_path / "lean" / "model" / m["graphs"]["scorer"]["file"]).exists()


# ---- in the browser ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_url(a: np.ndarray) -> str:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "PNG")
    return "data:image/png;base64," + base64.b64encode(b.getvalue()).decode()


def from_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


@pytest.fixture(scope="module")
def browser(site):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium; .ci/run installs it when it runs as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                            str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the static server did not start")
                time.sleep(0.1)
        with sync_api.sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=exe, args=ARGS)
            ctx = b.new_context(viewport={"width": 1024, "height": 768})
            log: dict[str, list[str]] = {"requests": [], "outside": [], "problems": []}
            ctx.on("request", lambda r: log["requests"].append(r.url))
            ctx.on("requestfailed", lambda r: log["problems"].append(f"failed: {r.url}"))

            def guard(route):  # nothing outside the folder: refused, and recorded
                if route.request.url.startswith(base) or route.request.url.startswith("data:") \
                        or route.request.url.startswith("blob:"):
                    route.continue_()
                else:
                    log["outside"].append(route.request.url)
                    route.abort()
            ctx.route("**/*", guard)
            page = ctx.new_page()
            page.on("pageerror", lambda e: log["problems"].append(f"page error: {e}"))
            page.on("console", lambda m: log["problems"].append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.goto(base)
            page.wait_for_function("() => window.varedit && window.varedit.ready", timeout=30000)
            info = page.evaluate("() => window.varedit.ready")
            page.wait_for_selector("body[data-ready='1']", timeout=30000)
            yield page, base, info, log
            b.close()
    finally:
        srv.terminate()
        srv.wait(10)


@pytest.fixture(scope="module")
def runtime(tiny_export):
    from varedit_onnx.runtime import OnnxVAR
    return OnnxVAR.from_dir(tiny_export, providers="cpu", threads=1)


def photo(S: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    small = (rng.random((6, 6, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((S, S), Image.BICUBIC))


def python_tokens(rt, encode: np.ndarray, keep: list[np.ndarray], label: int, seed: int, n: int, s: dict) -> list:
    """Python's onnxruntime runtime on the same plan: open loop, the encode canvas's own tokens forced."""
    from varedit.editing.noise import portable_uniforms
    x = np.repeat(encode.transpose(2, 0, 1)[None] * 2 - 1, n, 0).astype(np.float32)
    _, toks = rt.tokenize(x)
    out = rt.sample([label] * n, [np.repeat(k, n, 0) for k in keep], known_tokens=toks,
                    uniforms=portable_uniforms(seed, n, rt.patch_nums), cfg=s["cfg"], top_k=s["top_k"], top_p=s["top_p"])
    return [t.tolist() for t in out.tokens]


def test_page_loads_offline_and_stays_in_its_folder(browser):
    page, base, info, log = browser
    assert info["name"] == "tiny" and info["backend"] == "in the browser, fp32" and info["threads"] == 1
    assert "upscale" not in info["tasks"] and page.is_hidden("#tasks button[data-task='upscale']")
    assert page.evaluate("() => crossOriginIsolated") is False  # a plain static server: one WebAssembly thread
    assert log["requests"] and all(u.startswith(base) or u.startswith(("data:", "blob:")) for u in log["requests"])
    assert not log["outside"], log["outside"]
    assert any(u.endswith("/model/sampler.onnx") for u in log["requests"])
    assert any(u.endswith("/ort/ort-wasm-simd-threaded.wasm") for u in log["requests"])


def test_inpaint_tokens_equal_pythons(browser, runtime):
    """The grey prefill (exact on both sides), an explicit class, 2 candidates (2 runs of the batch-1 graph)."""
    from varedit.editing.plan import make_plan
    page, _, _, log = browser
    rt, S = runtime, runtime.image_size
    img = photo(S)
    mask = np.zeros((S, S), bool)
    mask[30:80, 40:100] = True
    r = page.evaluate("([i, m]) => window.varedit.run('inpaint', i, m, {seed: 11, n: 2, label: 3, prefill: 'gray', debug: true})",
                      [png_url(img), png_url(mask.astype(np.uint8) * 255)])
    plan = make_plan(img.astype(np.float32) / np.float32(255), mask, rt.patch_nums, S // rt.patch_nums[-1], prefill="gray")
    enc = np.array(r["debug"]["encode"][0], np.float32).reshape(S, S, 3)
    assert np.array_equal(enc, plan.encode_rgb)
    for k, keep in enumerate(plan.keep_maps):
        assert r["debug"]["keep"][k] == np.repeat(keep, 2, 0).ravel().astype(int).tolist(), f"keep map {k}"
    want = python_tokens(rt, plan.encode_rgb, plan.keep_maps, 3, 11, 2, r["settings"])
    assert r["debug"]["tokens"] == want
    assert r["settings"]["label"] == 3 and r["seed"] == 11 and len(r["images"]) == 2
    assert r["scores"] == sorted(r["scores"], reverse=True)
    # pixels farther than the feather from the mask are the input's, bit for bit; the hole changed
    import cv2
    feather = r["settings"]["feather"]
    far = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) > feather + 1
    for url in r["images"]:
        out = from_url(url)
        assert out.shape == img.shape and np.array_equal(out[far], img[far])
        assert np.abs(out[mask].astype(int) - img[mask]).mean() > 2
    assert not log["problems"], log["problems"]


def test_default_mode_and_label_inference_match_python_on_the_same_canvas(browser, runtime):
    """The page's default (push-pull prefill, label inferred with the scorer graph): Python's runtime on
    the canvas the page encoded gives the page's class log-likelihoods and the same tokens."""
    from varedit.editing.plan import make_plan
    page, _, _, _ = browser
    rt, S = runtime, runtime.image_size
    img = photo(S)
    mask = np.zeros((S, S), bool)
    mask[50:90, 20:70] = True
    r = page.evaluate("([i, m]) => window.varedit.run('inpaint', i, m, {seed: 5, debug: true})",
                      [png_url(img), png_url(mask.astype(np.uint8) * 255)])
    s = r["settings"]
    assert s["prefill"] == "pushpull" and s["label_source"] == "inferred" and s["cfg"] == 3.0
    enc = np.array(r["debug"]["encode"][0], np.float32).reshape(S, S, 3)
    plan = make_plan(img.astype(np.float32) / np.float32(255), mask, rt.patch_nums, S // rt.patch_nums[-1], prefill="gray")
    assert np.array_equal(enc[~mask], plan.encode_rgb[~mask])  # known pixels untouched by the prefill
    keep = [np.array(k, bool).reshape(1, -1) for k in r["debug"]["keep"]]
    assert all(np.array_equal(a, b) for a, b in zip(keep, plan.keep_maps))  # same coverage rule
    f, toks = rt.tokenize((enc.transpose(2, 0, 1)[None] * 2 - 1).astype(np.float32))
    ll = rt.class_log_likelihood(f, keep, tokens=toks)[0]
    np.testing.assert_allclose(s["label_log_likelihood"], ll, rtol=1e-4, atol=1e-2)
    assert s["label"] == int(np.argmax(ll))
    assert r["debug"]["tokens"] == python_tokens(rt, enc, keep, s["label"], 5, 1, s)


def test_page_inpaint_equals_the_python_editors(browser, runtime):
    """End to end: the page's default inpaint (push-pull prefill, harmonize, feathered paste-back) gives
    the pixels of Python's Editor on the onnxruntime backend with the same prefill, class and seed."""
    page, _, _, _ = browser
    S = runtime.image_size
    img = photo(S)
    mask = np.zeros((S, S), bool)
    mask[20:70, 60:110] = True
    r = page.evaluate("([i, m]) => window.varedit.run('inpaint', i, m, {seed: 21, n: 2, label: 6})",
                      [png_url(img), png_url(mask.astype(np.uint8) * 255)])
    py = runtime.editor().inpaint(img, mask, seed=21, n=2, label=6, prefill="pushpull", output_type="np")
    assert r["settings"]["feather"] == py.settings["feather"]
    np.testing.assert_allclose(r["scores"], py.scores, rtol=1e-4)
    for url, want in zip(r["images"], py.images):
        got = from_url(url)
        assert np.abs(got.astype(int) - np.asarray(want).astype(int)).max() <= 1


def test_generate_outpaint_and_edit_through_the_api(browser, runtime):
    from varedit.editing.noise import portable_uniforms
    page, _, _, log = browser
    rt, S = runtime, runtime.image_size
    r = page.evaluate("() => window.varedit.run('generate', {class: 2, n: 2, seed: 9, debug: true})")
    ref = rt.sample([2, 2], uniforms=portable_uniforms(9, 2, rt.patch_nums), cfg=r["settings"]["cfg"],
                    top_k=r["settings"]["top_k"], top_p=r["settings"]["top_p"])
    assert r["debug"]["tokens"] == [t.tolist() for t in ref.tokens]
    assert from_url(r["images"][0]).shape == (S, S, 3)
    img = photo(S)
    url = page.evaluate("(i) => window.varedit.outpaint(i, {right: 32, bottom: 16, seed: 1})", png_url(img))
    out = from_url(url)
    assert out.shape == (S + 16, S + 32, 3)
    assert np.array_equal(out[:S - 12, :S - 12], img[:S - 12, :S - 12])  # the original, away from the seam
    url = page.evaluate("(i) => window.varedit.edit(i, {box: [20, 20, 70, 60], class: 'c4', seed: 2})", png_url(img))
    out = from_url(url)
    assert out.shape == img.shape and np.array_equal(out[90:], img[90:]) and not np.array_equal(out[20:60, 20:70],
                                                                                                  img[20:60, 20:70])
    err = page.evaluate("(i) => window.varedit.inpaint(i, i, {n: 0}).then(() => 'ok', (e) => e.message)", png_url(img))
    assert err.startswith("n must be")
    assert not log["problems"], log["problems"]


def test_the_editor_runs_in_the_page(browser, tmp_path, paint_stroke):
    """The same editor as `varedit serve`: open, paint, Run; the candidates appear in view."""
    page, _, info, log = browser
    S = info["image_size"]
    Image.fromarray(photo(S)).save(tmp_path / "in.png")
    page.set_input_files("#file", str(tmp_path / "in.png"))
    page.wait_for_function(f"() => window.varedit.stage.width === {S}")
    paint_stroke(page, (30, 40), (90, 70))
    page.fill("#n", "2")
    page.click("#run")
    page.wait_for_selector("#gallery .cand:nth-child(2) img", timeout=60000)
    box = page.evaluate("() => { const r = document.getElementById('gallery').getBoundingClientRect(); "
                        "return [r.top, r.bottom, innerHeight]; }")
    assert 0 <= box[0] < box[1] <= box[2]
    assert page.evaluate("() => window.varedit.state.run.settings.backend") == "onnxruntime-web"
    assert not log["outside"] and not log["problems"], log


# ---- the page's pure-JavaScript parts, in Node.js (no browser, no npm files) ---------------------------
STATIC_JS = REPO / "varedit" / "server" / "static" / "js"


def node_json(tmp_path: Path, script: str, payload: object) -> object:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    (tmp_path / "in.json").write_text(json.dumps(payload))
    (tmp_path / "run.mjs").write_text(script.replace("STATIC", STATIC_JS.as_uri()))
    r = subprocess.run(["node", str(tmp_path / "run.mjs"), str(tmp_path / "in.json")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_js_noise_is_numpys(tmp_path):
    from varedit.editing.noise import portable_uniforms
    seeds, pns = [0, 1, 7, 2**31 - 1, 2**40 + 3], [1, 2, 3, 5]
    got = node_json(tmp_path, """
        import fs from "node:fs";
        import { portableUniforms } from "STATIC/runtime-noise.js";
        const { seeds, pns } = JSON.parse(fs.readFileSync(process.argv[2]));
        console.log(JSON.stringify(seeds.map((s) => portableUniforms(s, 2, pns).map((a) => Array.from(a)))));
    """, {"seeds": seeds, "pns": pns})
    for seed, scales in zip(seeds, got):
        for a, b in zip(scales, portable_uniforms(seed, 2, pns)):
            assert np.array_equal(np.array(a, np.float32), b.ravel()), seed


def test_js_windows_match_python(tmp_path):
    """Crop planning, the canvas and its conservative mask, and the placed-back pixels, shrinking (area)
    and growing (bicubic), against varedit.processing."""
    from varedit import processing as P
    from varedit.tasks import plan_windows
    rng = np.random.default_rng(4)
    big = np.asarray(Image.fromarray((rng.random((9, 9, 3)) * 255).astype(np.uint8)).resize((300, 260), Image.BICUBIC))
    small = np.asarray(Image.fromarray((rng.random((5, 5, 3)) * 255).astype(np.uint8)).resize((90, 70), Image.BICUBIC))
    m1 = np.zeros((260, 300), bool)
    m1[100:220, 80:180] = True
    m2 = np.zeros((70, 90), bool)
    m2[20:40, 30:60] = True
    cases = [(big.astype(np.float32) / np.float32(255), m1), (small.astype(np.float32) / np.float32(255), m2)]
    got = node_json(tmp_path, """
        import fs from "node:fs";
        import { extract, place, planCrop } from "STATIC/runtime-imaging.js";
        const out = JSON.parse(fs.readFileSync(process.argv[2])).map(({ w, h, rgb, mask }) => {
          const m = Uint8Array.from(mask), win = planCrop(m, w, h, 128);
          const { canvas, cmask } = extract(win, { w, h, c: 3, data: Float32Array.from(rgb) }, m);
          return { box: win.box, canvas: Array.from(canvas.data), cmask: Array.from(cmask), back: Array.from(place(win, canvas).img.data) };
        });
        console.log(JSON.stringify(out));
    """, [{"w": a.shape[1], "h": a.shape[0], "rgb": a.ravel().tolist(), "mask": m.ravel().astype(int).tolist()}
          for a, m in cases])
    for (img, m), js in zip(cases, got):
        win = plan_windows("crop", m, (img.shape[1], img.shape[0]), 128)[0]
        canvas, cmask = P.extract(win, img, m)
        back, _ = P.place(win, canvas, img.shape)
        assert js["box"] == list(win.box)
        assert np.array_equal(np.array(js["cmask"], bool).reshape(cmask.shape), cmask)
        assert np.abs(np.array(js["canvas"], np.float32).reshape(canvas.shape) - canvas).max() < 1e-4
        assert np.abs(np.array(js["back"], np.float32).reshape(back.shape) - back).max() < 1e-4


def test_js_fills_harmonize_and_feather_match_python(tmp_path):
    """The push-pull prefill (the page's default), harmonize and the paste-back feather, against
    varedit.processing on a 128-px canvas with an odd-sized hole."""
    from varedit import processing as P
    rng = np.random.default_rng(5)
    img = (np.asarray(Image.fromarray((rng.random((7, 7, 3)) * 255).astype(np.uint8)).resize((128, 128), Image.BICUBIC))
           .astype(np.float32) / np.float32(255))
    dec = np.clip(img * 0.8 + 0.1 + rng.normal(0, 0.02, img.shape), 0, 1).astype(np.float32)
    m = np.zeros((128, 128), bool)
    m[37:81, 22:95] = True
    m[60:100, 50:60] = True
    got = node_json(tmp_path, """
        import fs from "node:fs";
        import { feather, harmonize, prefill } from "STATIC/runtime-imaging.js";
        const { rgb, dec, mask } = JSON.parse(fs.readFileSync(process.argv[2]));
        const im = (d) => ({ w: 128, h: 128, c: 3, data: Float32Array.from(d) }), m = Uint8Array.from(mask);
        console.log(JSON.stringify({ fill: Array.from(prefill(im(rgb), m, "pushpull").data),
          harm: Array.from(harmonize(im(dec), im(rgb), m).data), feather: Array.from(feather(m, 128, 128, 12.5)) }));
    """, {"rgb": img.ravel().tolist(), "dec": dec.ravel().tolist(), "mask": m.ravel().astype(int).tolist()})
    fill = np.array(got["fill"], np.float32).reshape(img.shape)
    assert np.array_equal(fill[~m], img[~m])
    assert np.abs(fill - P.prefill_hole(img, m, method="pushpull")).max() < 1e-4
    assert np.abs(np.array(got["harm"], np.float32).reshape(img.shape) - P.harmonize(dec, img, m)).max() < 1e-4
    f = np.array(got["feather"], np.float32).reshape(m.shape)
    ref = P.feather(m, 12.5)
    assert np.array_equal(f == 0, ref == 0) and np.abs(f - ref).max() < 1e-3
