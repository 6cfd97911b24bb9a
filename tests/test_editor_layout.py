"""The editor's first screen in a real browser (Debian's Chromium through Playwright) at two window sizes:
the empty page's hint is one centred block of text, and the Run button and the candidates of a run are in
view without scrolling. Screenshots go to $VAREDIT_LAYOUT_SHOTS (a folder) when it is set."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from test_server_e2e import chromium_path, serve

SIZES = [(1400, 900), (1024, 768)]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

BOX = "(sel) => { const r = document.querySelector(sel).getBoundingClientRect(); " \
      "return {x: r.left, y: r.top, r: r.right, b: r.bottom, w: r.width, h: r.height}; }"
HINT = """() => {
  const hint = document.getElementById('drop-hint');
  const walker = document.createTreeWalker(hint, NodeFilter.SHOW_TEXT);
  const blocks = new Set();
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.textContent.trim()) continue;
    let el = n.parentElement;  // the nearest block-level element holding this text
    while (getComputedStyle(el).display.startsWith('inline')) el = el.parentElement;
    blocks.add(el);
  }
  const range = document.createRange();
  range.selectNodeContents(hint);
  const r = range.getBoundingClientRect(), s = document.getElementById('stage').getBoundingClientRect();
  return {blocks: blocks.size, text: hint.textContent.trim(), visible: getComputedStyle(hint).display !== 'none',
          h: r.height, cx: r.left + r.width / 2, cy: r.top + r.height / 2,
          line: parseFloat(getComputedStyle(hint.firstElementChild || hint).lineHeight) || 24,
          sx: s.left + s.width / 2, sy: s.top + s.height / 2, sh: s.height};
}"""


def inside(box: dict, w: int, h: int) -> bool:
    return box["w"] > 0 and box["h"] > 0 and box["x"] >= 0 and box["y"] >= 0 and box["r"] <= w and box["b"] <= h


@pytest.fixture(scope="module")
def browser_page():
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium; .ci/run installs it when it runs as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    with serve() as (base, _, _), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=ARGS)
        yield base, browser
        browser.close()


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_first_screen_layout(browser_page, size, tmp_path, paint_stroke):
    base, browser = browser_page
    from varedit.data.synthetic import render
    Image.fromarray(render(8, seed=5, size=192)).save(tmp_path / "in.png")
    W, H = size
    page = browser.new_page(viewport={"width": W, "height": H})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=30000)
    shots = Path(os.environ.get("VAREDIT_LAYOUT_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"editor-empty-{W}x{H}.png"))

    # the hint: every piece of its text in one block, a line or two high, centred on the canvas
    hint = page.evaluate(HINT)
    assert hint["visible"] and hint["text"].startswith("Open, paste (Ctrl+V)") and hint["text"].endswith("Generate.")
    assert hint["blocks"] == 1, hint
    assert hint["h"] <= 3 * hint["line"] and hint["h"] < hint["sh"] / 4, hint
    assert abs(hint["cx"] - hint["sx"]) < 20 and abs(hint["cy"] - hint["sy"]) < 40, hint
    assert inside(page.evaluate(BOX, "#run"), W, H)

    # a run with three candidates: the Run button and every candidate in view, nothing scrolled
    page.set_input_files("#file", str(tmp_path / "in.png"))
    page.wait_for_function("() => window.varedit.stage.width === 192")
    paint_stroke(page, (60, 80), (140, 96), steps=8)
    page.fill("#n", "3")
    page.click("#run")
    page.wait_for_selector("#gallery .cand:nth-child(3) img", timeout=90000)
    page.wait_for_function("() => [...document.querySelectorAll('#gallery img')].every((i) => i.complete && i.naturalWidth)")
    page.screenshot(path=str(shots / f"editor-result-{W}x{H}.png"))
    assert page.evaluate("document.getElementById('drop-hint').classList.contains('hidden')")
    assert page.evaluate("[document.scrollingElement.scrollTop, document.getElementById('panel').scrollTop]") == [0, 0]
    assert page.evaluate("document.scrollingElement.scrollHeight") <= H
    for sel in ("#run", "#gallery-card", "#gallery", "#gallery .cand:nth-child(1)", "#gallery .cand:nth-child(3)",
                "#gallery .cand:nth-child(3) button.reroll"):
        assert inside(page.evaluate(BOX, sel), W, H), (sel, page.evaluate(BOX, sel))
    # the result is shown on the canvas, below the toolbar and above the tray
    img = page.evaluate("(() => { const a = window.varedit.imageToClient(0, 0), b = window.varedit.imageToClient(192, 192);"
                        " return {x: a.x, y: a.y, r: b.x, b: b.y, w: b.x - a.x, h: b.y - a.y}; })()")
    bar, stage = page.evaluate(BOX, "#toolbar"), page.evaluate(BOX, "#stage")
    assert img["y"] >= bar["b"] and img["b"] <= stage["b"] and img["h"] > 150, (img, bar, stage)

    # previews: one per scale arrived, shown from the second scale on (the first is a single token)
    stats = page.evaluate("window.varedit.stats")
    assert stats["previews"] == 6 and stats["previewsShown"] == 5, stats
    page.close()
    assert not problems, problems
