"""`varedit serve`'s HTTP API through FastAPI's test client, on the bundled demo model: every endpoint,
the event stream, the limits, the queue, access control, and every kind of bad input (4xx with one
clear line, never a 500)."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install -e '.[server]')")
httpx = pytest.importorskip("httpx", reason="httpx (FastAPI's test client) is not installed")
from fastapi.testclient import TestClient

from varedit.server import ServerConfig, create_app
from varedit.server.jobs import JobCancelled, QueueFull, Worker

S = 128  # the demo model's size
SN = 6   # and its scales


@pytest.fixture(scope="module")
def editor():
    from varedit import VarEditPipeline
    return VarEditPipeline.from_pretrained("demo", device="cpu").editor


@pytest.fixture(scope="module")
def client(editor):
    with TestClient(create_app(editor, ServerConfig(max_pixels=600 * 600, max_candidates=4))) as c:
        yield c


def png(a: np.ndarray, mode: str | None = None) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a, mode).save(b, "PNG")
    return b.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode(s: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(s)))
    im.load()
    return im


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 160x120 picture: a yellow disc on a blue gradient with noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:160]
    img = np.stack([40 + xx / 4, 80 + yy / 3, 170 - xx / 8], -1)
    disc = (xx - 70) ** 2 + (yy - 60) ** 2 < 30 ** 2
    img[disc] = (230, 200, 40)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def stroke() -> np.ndarray:
    m = np.zeros((120, 160), np.uint8)
    m[50:66, 40:110] = 255
    return m


def far_from(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) == 0


def one_line_4xx(r, status: int | tuple[int, ...]) -> str:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail
    return detail


# ---- information -----------------------------------------------------------------------------------
def test_health_and_model_info(client):
    h = client.get("/api/v1/health").json()
    assert h["status"] == "ok" and h["model"] == "demo" and h["queue"]["waiting"] == 0
    m = client.get("/api/v1/model").json()
    assert m["name"] == "demo" and m["backend"] == "torch" and m["image_size"] == S
    assert m["patch_nums"] == [1, 2, 3, 4, 6, 8] and m["num_classes"] == 10
    assert [c["names"][0] for c in m["classes"]][:3] == ["circle", "square", "triangle"]
    assert m["edit_defaults"]["cfg"] == 3.0 and m["defaults"]["top_k"] == 128
    assert m["limits"]["max_candidates"] == 4 and m["limits"]["max_pixels"] == 360000
    assert m["can_infer_label"] and m["previews"] and m["auth"] is False


def test_openapi_docs_and_editor_page(client):
    spec = client.get("/openapi.json").json()
    for task in ("inpaint", "outpaint", "edit", "upscale", "generate", "infer-label"):
        body = spec["paths"][f"/api/v1/{task}"]["post"]["requestBody"]["content"]
        assert set(body) == {"application/json", "multipart/form-data"}
    assert spec["paths"]["/api/v1/inpaint"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"][
        "properties"]["mask"]["format"] == "binary"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()  # works offline
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'src="js/app.js"' in page.text and "text/html" in page.headers["content-type"]
    for f in ("js/app.js", "js/stage.js", "js/api.js", "js/history.js", "style.css"):
        r = client.get(f"/{f}")
        assert r.status_code == 200 and len(r.content) > 500, f


# ---- the tasks ---------------------------------------------------------------------------------------
def test_inpaint_json(client, photo, stroke):
    body = {"image": b64(png(photo)), "mask": b64(png(stroke)), "seed": 11, "n": 2, "label": "circle"}
    r = client.post("/api/v1/inpaint", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert r.headers["x-seed"] == "11" and out["seed"] == 11 and out["task"] == "inpaint"
    assert (out["width"], out["height"]) == (160, 120) and len(out["images"]) == 2
    assert out["scores"] == sorted(out["scores"], reverse=True)  # best candidate first
    assert out["settings"]["label"] == 0 and out["settings"]["label_source"] == "given"
    keep = far_from(stroke > 0, 10)
    for s in out["images"]:
        im = decode(s)
        a = np.asarray(im)
        assert im.size == (160, 120) and im.mode == "RGB"
        assert np.array_equal(a[keep], photo[keep])             # far from the mask: the input, bit for bit
        assert np.abs(a[stroke > 0].astype(int) - photo[stroke > 0]).mean() > 1  # inside: regenerated
        assert json.loads(im.text["varedit"])["seed"] == 11     # the settings travel with the PNG
    assert np.array_equal(np.asarray(decode(out["mask"])) > 0, stroke > 0)
    again = client.post("/api/v1/inpaint", json=body).json()
    assert again["images"] == out["images"]                     # the seed reproduces it


def test_inpaint_multipart_png_equals_json(client, photo):
    form = {"box": "40,30,100,90", "seed": "5", "label": "none", "harmonize": "true"}
    r = client.post("/api/v1/inpaint?format=png", files={"image": ("p.png", png(photo), "image/png")}, data=form)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    settings = json.loads(r.headers["x-settings"])
    assert r.headers["x-seed"] == "5" and settings["seed"] == 5 and settings["label_source"] == "unconditional"
    j = client.post("/api/v1/inpaint", json={"image": b64(png(photo)), "box": [40, 30, 100, 90], "seed": 5,
                                              "label": "none"}).json()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), np.asarray(decode(j["images"][0])))
    # Accept: image/png does the same
    r2 = client.post("/api/v1/inpaint", files={"image": ("p.png", png(photo))}, data=form,
                     headers={"Accept": "image/png"})
    assert r2.headers["content-type"] == "image/png" and r2.content == r.content


def test_inpaint_rgba_alpha_is_the_mask(client, photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[20:50, 20:60, 3] = 0
    r = client.post("/api/v1/inpaint", json={"image": b64(png(rgba)), "seed": 2, "label": "none"})
    assert r.status_code == 200, r.text
    im = decode(r.json()["images"][0])
    assert im.mode == "RGBA" and np.asarray(decode(r.json()["mask"]))[20:50, 20:60].all()


def test_16_bit_stays_16_bit(client, photo):
    import cv2
    deep = photo.astype(np.uint16) * 257 + np.arange(160, dtype=np.uint16)[None, :, None]  # low bits used
    ok, buf = cv2.imencode(".png", cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    r = client.post("/api/v1/inpaint", json={"image": b64(buf.tobytes()), "box": [40, 30, 100, 90], "seed": 1,
                                              "label": "none"})
    assert r.status_code == 200, r.text
    out = cv2.imdecode(np.frombuffer(base64.b64decode(r.json()["images"][0]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == deep.shape
    out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    assert np.array_equal(out[:10], deep[:10]) and np.array_equal(out[:, 120:], deep[:, 120:])
    assert json.loads(decode(r.json()["images"][0]).text["varedit"])["seed"] == 1  # settings chunk here too


def test_outpaint_edit_upscale_generate(client, photo):
    img = b64(png(photo))
    o = client.post("/api/v1/outpaint", json={"image": img, "right": 48, "top": 0.25, "seed": 1}).json()
    assert (o["width"], o["height"]) == (208, 150) and o["settings"]["right"] == 48
    a = np.asarray(decode(o["images"][0]))
    assert np.array_equal(a[30 + 20:, :160 - 20], photo[20:, :140])  # the original, kept exactly (feather 13 px)
    e = client.post("/api/v1/edit", json={"image": img, "box": [40, 30, 100, 90], "class": "star", "seed": 3}).json()
    assert e["settings"]["label"] == 3 and (e["width"], e["height"]) == (160, 120)
    u = client.post("/api/v1/upscale", json={"image": img, "scale": 1.5, "seed": 4}).json()
    assert (u["width"], u["height"]) == (240, 180) and u["mask"] is None
    g = client.post("/api/v1/generate", json={"class": ["heart", 1], "seed": 7}).json()
    assert g["settings"]["labels"] == [9, 1] and len(g["images"]) == 2 and decode(g["images"][0]).size == (S, S)
    g2 = client.post("/api/v1/generate", json={"class": "heart", "n": 2, "seed": 7}).json()
    assert np.array_equal(np.asarray(decode(g2["images"][0])), np.asarray(decode(g["images"][0])))  # same seed
    unc = client.post("/api/v1/generate", json={}).json()
    assert unc["settings"]["labels"] == [10]  # no class: unconditional (the null class)


def test_infer_label(client, editor):
    disc = np.asarray(editor.generate("circle", seed=3).images[0])
    r = client.post("/api/v1/infer-label", json={"image": b64(png(disc)), "box": [0.3, 0.3, 0.6, 0.6], "top": 3})
    out = r.json()
    assert r.status_code == 200 and out["name"] == out["posterior"][0][0] and len(out["posterior"]) == 3
    g = editor.infer_label(disc, box=(0.3, 0.3, 0.6, 0.6))
    assert out["label"] == g.label and abs(out["posterior"][0][1] - g.posterior[g.label]) < 1e-5
    ps = [p for _, p in out["posterior"]]
    assert ps == sorted(ps, reverse=True) and sum(ps) <= 1 + 1e-6


def test_keep_scales_rerolls_the_detail_only(client, editor):
    """"Keep the layout, re-roll the detail": a result re-run with its first k scales kept stays close to
    it; with none kept the same request draws a new picture."""
    star = np.asarray(editor.generate("star", seed=5).images[0]).astype(np.float32)
    full = png(np.full((S, S), 255, np.uint8))
    diffs = {}
    for k in (0, 4):
        d = []
        for seed in (1, 2):
            r = client.post("/api/v1/inpaint", json={"image": b64(png(star.astype(np.uint8))), "mask": b64(full),
                                                      "label": "star", "keep_scales": k, "seed": seed})
            assert r.json()["settings"]["keep_scales"] == k
            d.append(np.abs(np.asarray(decode(r.json()["images"][0]), np.float32) - star).mean())
        diffs[k] = float(np.mean(d))
    assert diffs[4] < 0.5 * diffs[0], diffs


def sse(lines) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line[5:])))
    return events


def test_stream_reports_every_scale_with_previews(client, photo, stroke):
    body = {"image": b64(png(photo)), "mask": b64(png(stroke)), "seed": 11, "n": 2, "label": "circle"}
    with client.stream("POST", "/api/v1/inpaint?stream=true", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse(r.iter_lines())
    names = [n for n, _ in events]
    assert names == ["queued", "start"] + ["progress"] * SN + ["result"], names
    steps = [d for n, d in events if n == "progress"]
    assert [d["step"] for d in steps] == list(range(1, SN + 1)) and all(d["total"] == SN for d in steps)
    previews = [np.asarray(decode(d["preview"]), np.float32) for d in steps]
    assert all(p.shape == (S, 2 * S, 3) for p in previews)  # the two candidates side by side
    # coarse to fine: each scale brings the canvas closer to the final one
    to_last = [np.abs(p - previews[-1]).mean() for p in previews[:-1]]
    assert to_last[0] > to_last[-1] > 0, to_last
    result = events[-1][1]
    same = client.post("/api/v1/inpaint", json=body).json()
    assert result["images"] == same["images"]  # streaming changes nothing in the result
    with client.stream("POST", "/api/v1/generate?stream=true", json={"class": 1, "seed": 1}) as r:
        ev = sse(r.iter_lines())
    last = np.asarray(decode([d for n, d in ev if n == "progress"][-1]["preview"]), np.int16)
    image = np.asarray(decode(ev[-1][1]["images"][0]), np.int16)
    assert np.abs(last - image).max() <= 1  # the last preview is the decoded image itself
    with client.stream("POST", "/api/v1/generate?stream=true&preview=false", json={"class": 1, "seed": 1}) as r:
        ev = sse(r.iter_lines())
    assert [d["preview"] for n, d in ev if n == "progress"] == [None] * SN and ev[-1][0] == "result"


def test_upscale_streams_tile_previews(client, photo):
    with client.stream("POST", "/api/v1/upscale?stream=true", json={"image": b64(png(photo)), "scale": 1.5,
                                                                   "seed": 4}) as r:
        events = sse(r.iter_lines())
    steps = [d for n, d in events if n == "progress"]
    assert events[-1][0] == "result" and steps and steps[-1]["step"] == steps[-1]["total"]
    previews = [np.asarray(decode(d["preview"])) for d in steps]
    assert all(p.ndim == 3 and p.shape[0] == S and p.shape[1] % S == 0 for p in previews)  # tiles side by side


def test_stream_error_event(client, photo):
    with client.stream("POST", "/api/v1/upscale?stream=true", json={"image": b64(png(photo)), "scale": 16}) as r:
        assert r.status_code == 422  # refused before anything is queued: a plain 4xx, no stream


# ---- bad input: 4xx with one line, never a 500 -----------------------------------------------------------
@pytest.fixture(scope="module")
def bad_bodies(photo, stroke):
    good = b64(png(photo))
    truncated = b64(png(photo)[:300])
    huge = b64(png(np.zeros((700, 700), np.uint8)))  # 0.49 MP, over this client's 0.36 MP limit
    return [
        ("inpaint", {"image": good, "box": [1, 2, 3]}, 422, "box needs 4"),
        ("inpaint", {"image": good, "box": "a,b,c,d"}, 422, "expected numbers"),
        ("inpaint", {"image": good, "box": [1, 2, 30, 40], "n": "many"}, 422, "n:"),
        ("inpaint", {"image": good, "box": [1, 2, 30, 40], "n": 1.5}, 422, "n:"),
        ("inpaint", {"image": good, "box": [1, 2, 30, 40], "n": 0}, 422, "n must be in 1..64, got 0"),
        ("inpaint", {"image": good, "box": [1, 2, 30, 40], "n": 5}, 422, "at most 4"),
        ("inpaint", {"image": good, "box": [1, 2, 30, 40], "seed": -1}, 422, "seed"),
        ("inpaint", {"image": good, "box": [1, 2, 30, 40], "top_p": 2}, 422, "top_p"),
        ("inpaint", {"image": good, "box": [1, 2, 30, 40], "cfg": "high"}, 422, "cfg"),
        ("inpaint", {"image": good, "box": [1, 2, 30, 40], "keep_scales": 7}, 422, "keep_scales must be in 0..6"),
        ("inpaint", {"image": good, "box": [1, 2, 30, 40], "mode": "magic"}, 422, "mode"),
        ("inpaint", {"image": good, "box": [1, 2, 30, 40], "topk": 3}, 422, "topk: unknown field"),
        ("inpaint", {"image": good, "box": [1, 2, 30, 40], "label": "dragon"}, 422, "unknown class 'dragon'"),
        ("inpaint", {"image": good, "box": [1, 2, 30, 40], "label": 10}, 422, "out of range"),
        ("inpaint", {"image": good, "box": [500, 500, 600, 600]}, 422, "box"),
        ("inpaint", {"image": good}, 422, "no mask"),
        ("inpaint", {"image": good, "mask": b64(png(stroke[:60])), }, 422, "mask is 160x60 but the image is 160x120"),
        ("inpaint", {"image": good, "mask": b64(png(stroke)), "box": [1, 2, 3, 4]}, 422, "not both"),
        ("inpaint", {"box": [1, 2, 30, 40]}, 422, "image: missing"),
        ("inpaint", {"image": 12, "box": [1, 2, 30, 40]}, 422, "base64 string"),
        ("inpaint", {"image": "not base64 at all!", "box": [1, 2, 30, 40]}, 422, "not valid base64"),
        ("inpaint", {"image": b64(b"hello, world"), "box": [1, 2, 30, 40]}, 422, "the upload is not an image"),
        ("inpaint", {"image": truncated, "box": [1, 2, 30, 40]}, 422, "truncated"),
        ("inpaint", {"image": huge, "box": [1, 2, 30, 40]}, 413, "above this server's limit"),
        ("inpaint", {"image": good, "mask": huge}, 413, "mask is 700x700"),
        ("outpaint", {"image": good}, 422, "nothing to extend"),
        ("outpaint", {"image": good, "right": -5}, 422, "right"),
        ("outpaint", {"image": good, "right": 3000}, 422, "outpainted image would be 3160x120"),
        ("outpaint", {"image": good, "left": 10, "fill": "plaid"}, 422, "fill"),
        ("edit", {"image": good, "box": [1, 2, 30, 40]}, 422, "class: Field required"),
        ("edit", {"image": good, "box": [1, 2, 30, 40], "class": "hart"}, 422, "did you mean 'heart'"),
        ("edit", {"image": good, "class": "heart"}, 422, "box"),
        ("upscale", {"image": good, "scale": 0}, 422, "scale"),
        ("upscale", {"image": good, "scale": 6}, 422, "upscaled image would be 960x720"),
        ("upscale", {"image": good, "keep_scales": 9}, 422, "keep_scales"),
        ("generate", {"class": "unicorn"}, 422, "unknown class 'unicorn'"),
        ("generate", {"class": []}, 422, "empty"),
        ("generate", {"class": ["star"] * 5}, 422, "at most 4"),
        ("generate", {"class": {"name": "star"}}, 422, "class"),
        ("generate", {"guidance": "cubic"}, 422, "guidance"),
        ("infer-label", {"image": good}, 422, "no mask"),
        ("infer-label", {"image": good, "box": [1, 2, 30, 40], "top": 0}, 422, "top"),
    ]


def test_bad_json_bodies(client, bad_bodies):
    for task, body, status, words in bad_bodies:
        r = client.post(f"/api/v1/{task}", json=body)
        detail = one_line_4xx(r, status)
        assert words in detail, (task, body if len(str(body)) < 200 else list(body), detail)


@pytest.mark.parametrize("content,ctype,status,words", [
    (b"{bad json", "application/json", 400, "not valid JSON"),
    (b"[1, 2, 3]", "application/json", 422, "JSON object"),
    (b'"just a string"', "application/json", 422, "JSON object"),
    (b'{"class": "star", "cfg": NaN}', "application/json", 422, "finite"),
    (b'{"class": "star", "seed": 1e400}', "application/json", 422, "seed"),
    (b"\xff\xfe\x00garbage", "application/json", 400, "not valid JSON"),
    (b"class=star", "text/plain", 415, "unsupported content type"),
    (b"--xyz\r\ngarbage", "multipart/form-data", 400, "malformed form data"),
])
def test_malformed_bodies(client, content, ctype, status, words):
    r = client.post("/api/v1/generate", content=content, headers={"content-type": ctype})
    assert words in one_line_4xx(r, status)


def test_bad_multipart_and_query(client, photo):
    files = {"image": ("p.png", png(photo)), "extra": ("x.png", png(photo))}
    r = client.post("/api/v1/upscale", files=files)
    assert "unexpected file" in one_line_4xx(r, 422)
    r = client.post("/api/v1/upscale", files={"image": ("p.png", png(photo)[:500])})
    assert "truncated" in one_line_4xx(r, 422) or "cannot read" in r.json()["detail"]
    r = client.post("/api/v1/upscale", data={"image": "%%%"})
    assert "not valid base64" in one_line_4xx(r, 422)
    r = client.post("/api/v1/generate?format=gif", json={"class": 1})
    assert "format" in one_line_4xx(r, 422)
    r = client.post("/api/v1/generate?stream=perhaps", json={"class": 1})
    assert "stream" in one_line_4xx(r, 422)
    r = client.get("/api/v1/generate")
    assert "use POST" in one_line_4xx(r, 405) and r.headers["allow"] == "POST"
    assert client.post("/api/v1/nope", json={}).status_code == 404


def test_body_limit(editor):
    cfg = ServerConfig(max_upload_bytes=50_000)
    big = b64(png((np.random.default_rng(1).random((200, 200, 3)) * 255).astype(np.uint8)))
    with TestClient(create_app(editor, cfg)) as c:
        r = c.post("/api/v1/upscale", json={"image": big})
        assert "above this server's limit of 0.1 MB" in one_line_4xx(r, 413)

        def chunks():  # no Content-Length: counted while it streams in
            for i in range(0, len(big), 8192):
                yield big[i:i + 8192].encode()
        r = c.post("/api/v1/upscale", content=chunks(), headers={"content-type": "application/json"})
        one_line_4xx(r, 413)
        r = c.post("/api/v1/upscale", files={"image": ("big.png", base64.b64decode(big))})
        one_line_4xx(r, 413)
        assert c.get("/api/v1/health").json()["status"] == "ok"


# ---- the queue, the timeout, cancellation -------------------------------------------------------------
class GatedEditor:
    """The demo editor, whose generate waits for a gate first: holds the worker busy on demand. With
    ``canned`` it then reports SN scales and returns that result, so timings do not depend on the
    machine's load."""

    def __init__(self, ed, gate: threading.Event, canned=None):
        self._ed, self._gate, self._canned = ed, gate, canned

    def __getattr__(self, name):
        return getattr(self._ed, name)

    def run(self, request, *, callback=None, preview=False):  # the server runs every task as a request
        if request.task != "generate":
            return self._ed.run(request, callback=callback, preview=preview)
        assert self._gate.wait(180)
        if self._canned is None:
            return self._ed.run(request, callback=callback, preview=preview)
        for i in range(SN):
            callback(i, SN, None)
            time.sleep(0.005)
        return self._canned


def test_full_queue_gets_503_with_retry_after(editor):
    gate = threading.Event()
    app = create_app(GatedEditor(editor, gate), ServerConfig(queue_size=2))

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
            held = [asyncio.create_task(c.post("/api/v1/generate", json={"class": 1, "seed": i})) for i in range(3)]
            t0 = time.monotonic()
            while time.monotonic() - t0 < 120:  # one runs (held at the gate), two wait
                await asyncio.sleep(0.02)
                st = (await c.get("/api/v1/health")).json()["queue"]
                if st["running"] and st["waiting"] == 2:
                    break
            assert st["running"] and st["waiting"] == 2, (st, time.monotonic() - t0)
            refused = await c.post("/api/v1/generate", json={"class": 1})
            stream_refused = await c.post("/api/v1/generate?stream=true", json={"class": 1})
            gate.set()
            done = await asyncio.gather(*held)
            return refused, stream_refused, done, (await c.get("/api/v1/health")).json()["queue"]

    refused, stream_refused, done, st = asyncio.run(scenario())
    assert "busy: 2 requests are waiting" in one_line_4xx(refused, 503)
    assert int(refused.headers["retry-after"]) >= 1
    assert stream_refused.status_code == 503 and "retry-after" in stream_refused.headers
    assert [r.status_code for r in done] == [200, 200, 200]
    assert st["peak_waiting"] == 2 and st["rejected"] == 2 and st["completed"] == 3
    app.state.worker.close()


def test_timeout_gives_504_and_frees_the_model(editor):
    gate = threading.Event()
    app = create_app(GatedEditor(editor, gate, canned=editor.generate(1, seed=0)), ServerConfig(timeout_s=1.5))
    with TestClient(app) as c:
        t = time.monotonic()
        r = c.post("/api/v1/generate", json={"class": 1})       # runs, held at the gate
        assert "longer than this server's limit of 1.5 s" in one_line_4xx(r, 504)
        assert time.monotonic() - t < 1.5 + 5  # at the deadline, not when the job ends (the gate stays shut)
        with c.stream("POST", "/api/v1/generate?stream=true", json={"class": 1}) as s:  # waits behind it
            ev = sse(s.iter_lines())
        assert [n for n, _ in ev] == ["queued", "error"] and ev[-1][1]["status"] == 504
        gate.set()
        for _ in range(200):  # the abandoned jobs stop at their next scale, or before they start
            st = c.get("/api/v1/health").json()["queue"]
            if not st["running"] and not st["waiting"]:
                break
            time.sleep(0.05)
        assert st["cancelled"] == 2 and st["failed"] == 0 and st["completed"] == 0
        assert c.post("/api/v1/generate", json={"class": 1}).status_code == 200


def test_a_client_that_goes_away_frees_its_place(editor):
    """Over a real socket (uvicorn in a thread): a streaming client and a plain one give up while they
    wait; their jobs leave the queue at once and never run."""
    import socket

    import uvicorn
    gate = threading.Event()
    app = create_app(GatedEditor(editor, gate, canned=editor.generate(1, seed=0)), ServerConfig())
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        holder = threading.Thread(target=lambda: httpx.post(f"{base}/api/v1/generate", json={"class": 1}, timeout=30))
        holder.start()
        queue = lambda: httpx.get(f"{base}/api/v1/health").json()["queue"]  # noqa: E731
        for _ in range(500):
            if queue()["running"]:
                break
            time.sleep(0.02)
        with httpx.Client(timeout=30) as c, c.stream("POST", f"{base}/api/v1/generate?stream=true",
                                                      json={"class": 2}) as r:
            first = next(r.iter_lines())
        assert first == "event: queued"
        with pytest.raises(httpx.TimeoutException):
            httpx.post(f"{base}/api/v1/generate", json={"class": 3}, timeout=2.0)
        for _ in range(200):
            st = queue()
            if st["cancelled"] == 2:
                break
            time.sleep(0.05)
        assert st["waiting"] == 0 and st["cancelled"] == 2 and st["running"]
        gate.set()
        holder.join(30)
        for _ in range(200):
            st = queue()
            if not st["running"]:
                break
            time.sleep(0.05)
        assert st["completed"] == 1 and st["cancelled"] == 2  # only the first one ran
    finally:
        gate.set()
        server.should_exit = True
        th.join(10)


def test_worker_cancels_between_scales(editor):
    async def scenario():
        w = Worker(editor, queue_size=4)
        seen: list[int] = []

        def long_job(ed, progress):
            for i in range(50):
                progress(i, 50, None)
                seen.append(i)
                time.sleep(0.01)
            return "finished"

        job = w.submit("x", long_job)
        queued = w.submit("x", lambda ed, p: "ran")
        queued.cancel.set()   # cancelled while waiting: never runs
        while True:
            ev = await job.events.get()
            if ev.kind == "progress" and ev.step == 3:
                job.cancel.set()
            if ev.kind == "done":
                break
        ev2 = await queued.events.get()
        w.close()
        return ev, ev2, seen

    ev, ev2, seen = asyncio.run(scenario())
    assert isinstance(ev.error, JobCancelled) and len(seen) < 50
    assert ev2.kind == "done" and isinstance(ev2.error, JobCancelled)


def test_worker_queue_bound():
    async def scenario():
        gate = threading.Event()
        w = Worker(None, queue_size=1)
        a = w.submit("x", lambda ed, p: gate.wait(5))
        while w.stats()["running"] is False:
            await asyncio.sleep(0.01)
        b = w.submit("x", lambda ed, p: 1)
        with pytest.raises(QueueFull) as e:
            w.submit("x", lambda ed, p: 1)
        gate.set()
        w.close()
        return e.value, a, b

    err, _, _ = asyncio.run(scenario())
    assert err.retry_after >= 1


def test_worker_idle_job_never_counts_as_waiting():
    """Jobs submitted back to back, before the worker thread had a chance to wake up: the first is the
    worker's at once (running, not waiting), so a queue of 1 still takes the second and refuses only the
    third. (The worker once queued the first until its thread woke, and on a loaded machine refused the
    second, or counted it against the limit.)"""
    async def scenario():
        gate = threading.Event()
        w = Worker(None, queue_size=1)
        try:
            a = w.submit("x", lambda ed, p: gate.wait(5))
            after_a = w.stats()
            b = w.submit("x", lambda ed, p: 2)
            after_b = w.stats()
            with pytest.raises(QueueFull):
                w.submit("x", lambda ed, p: 3)
            assert w.position(a) == 0 and w.position(b) == 1
            gate.set()
            evs = [await a.events.get() for _ in range(2)] + [await b.events.get() for _ in range(2)]
            return after_a, after_b, evs, w.stats()
        finally:
            gate.set()
            w.close()

    after_a, after_b, evs, st = asyncio.run(scenario())
    assert (after_a["running"], after_a["waiting"]) == (True, 0)
    assert (after_b["running"], after_b["waiting"]) == (True, 1)
    assert [e.kind for e in evs] == ["start", "done", "start", "done"] and evs[3].result == 2
    assert st["peak_waiting"] == 1 and st["rejected"] == 1 and st["completed"] == 2


# ---- access control -------------------------------------------------------------------------------------
def test_token_required_when_set(editor):
    token = "s3cret-token-for-tests"
    with TestClient(create_app(editor, ServerConfig(token=token))) as c:
        r = c.get("/api/v1/model")
        assert "access token" in one_line_4xx(r, 401) and r.headers["www-authenticate"] == "Bearer"
        assert c.get("/api/v1/model", headers={"Authorization": "Bearer wrong-token-123"}).status_code == 401
        assert c.post("/api/v1/generate", json={"class": 1}).status_code == 401
        assert c.get("/api/v1/model", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert c.get(f"/api/v1/model?token={token}").json()["auth"] is True
        assert c.get("/api/v1/health").status_code == 200  # liveness stays public
        assert c.get("/").status_code == 200               # the editor page asks for the token itself
    with pytest.raises(ValueError, match="at least 8"):
        ServerConfig(token="short")


def test_loopback_host_and_origin_checks(editor):
    cfg = ServerConfig(allowed_hosts=("localhost", "127.0.0.1", "::1"))
    with TestClient(create_app(editor, cfg), base_url="http://127.0.0.1:8080") as c:
        assert c.get("/api/v1/health").status_code == 200
        assert c.get("/", headers={"Host": "localhost:8080"}).status_code == 200
        r = c.get("/api/v1/model", headers={"Host": "attacker.example:8080"})  # DNS rebinding
        assert "unexpected Host header" in one_line_4xx(r, 400)
        r = c.post("/api/v1/generate", json={"class": 1}, headers={"Origin": "http://attacker.example"})
        assert "cross-origin" in one_line_4xx(r, 403)
        ok = c.post("/api/v1/generate", json={"class": 1, "seed": 1}, headers={"Origin": "http://127.0.0.1:8080"})
        assert ok.status_code == 200


# ---- the command --------------------------------------------------------------------------------------
def test_serve_command_errors():
    import socket

    from click.testing import CliRunner

    from varedit.cli import main
    runner = CliRunner()
    res = runner.invoke(main, ["serve", "--backend", "onnx"])
    assert res.exit_code != 0 and "--backend onnx needs --onnx-dir" in res.output
    res = runner.invoke(main, ["serve", "--port", "70000"])
    assert res.exit_code != 0 and "70000" in res.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        res = runner.invoke(main, ["serve", "--port", str(port)])
    assert res.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(main, ["serve", "--host", "0.0.0.0", "--token", "short"])
    assert res.exit_code == 1 and "at least 8 characters" in res.output
