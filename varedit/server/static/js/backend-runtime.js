// The editor's backend in the browser: the exported graphs (model/) on onnxruntime-web (ort/), the page
// that `varedit export web` writes. Same shape as backend-http.js; the JavaScript API (window.varedit.
// inpaint, ...) comes with it.

import * as ort from "../ort/ort.wasm.bundle.min.mjs";
import { createVaredit } from "./varedit-web.js";
import { maskOf } from "./runtime-tasks.js";
import { toPixels, toPngBlob } from "./runtime-pixels.js";

const yieldToPaint = () => new Promise((r) => setTimeout(r, 0));

function pick(params, keys) {
  const o = {};
  for (const k of keys) if (params[k] !== undefined && params[k] !== null && params[k] !== "") o[k] = params[k];
  return o;
}

function maskPixels(mask) { // Uint8Array -> black and white RGBA
  const px = new Uint8ClampedArray(mask.length * 4);
  for (let i = 0; i < mask.length; i++) {
    const v = mask[i] ? 255 : 0;
    px[4 * i] = px[4 * i + 1] = px[4 * i + 2] = v;
    px[4 * i + 3] = 255;
  }
  return px;
}

export function runtimeBackend() {
  // the bundle has onnxruntime's JavaScript glue inside and finds its .wasm next to itself (ort/).
  // WebAssembly threads need a cross-origin isolated page (the server sends COOP and COEP headers);
  // ?threads=N asks for N. onnxruntime runs in a worker, so the page stays responsive while it works
  // (?proxy=0: on the page's own thread)
  const q = new URLSearchParams(location.search);
  const threads = Number(q.get("threads")) || (globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1);
  const api = createVaredit({ ort, model: new URL("../model/", import.meta.url).href, numThreads: threads,
    proxy: q.get("proxy") !== "0" });
  return {
    name: "runtime",
    api,
    async start() {},
    model() { return api.ready; },
    setToken() {},
    async run(task, params, { signal, onEvent = () => {} } = {}) {
      await api.ready;
      const T = api.tasks, t0 = performance.now();
      const check = () => { if (signal && signal.aborted) throw new DOMException("cancelled", "AbortError"); };
      onEvent("start", {});
      onEvent("phase", { text: task === "generate" ? "sampling…" : "reading the image…", value: 0.05 });
      await yieldToPaint();
      check();
      const o = pick(params, ["seed", "n", "cfg", "top_k", "top_p", "keep_scales", "mode", "strategy", "label", "fill"]);
      if (params.harmonize !== undefined) o.harmonize = params.harmonize === true || params.harmonize === "true";
      let r;
      if (task === "generate") {
        r = await T.generate(params.class || null, o);
      } else {
        if (task === "upscale") throw new Error("upscaling is not in the browser editor: use varedit upscale");
        const px = await toPixels(params.image);
        check();
        o.onPhase = (text, value) => onEvent("phase", { text, value });
        if (task === "inpaint") {
          const mp = await toPixels(params.mask);
          r = await T.inpaint(px, maskOf(mp), o);
        } else if (task === "outpaint") {
          r = await T.outpaint(px, pick(params, ["left", "right", "top", "bottom"]), o);
        } else if (task === "edit") {
          r = await T.edit(px, String(params.box).split(",").map(Number), params.class, o);
        } else {
          throw new Error(`unknown task ${task}`);
        }
      }
      check();
      const images = await Promise.all(r.images.map(toPngBlob));
      const mask = r.mask ? await toPngBlob({ width: r.images[0].width, height: r.images[0].height, data: maskPixels(r.mask) }) : null;
      return { seed: r.seed, settings: r.settings, scores: r.scores, width: r.images[0].width, height: r.images[0].height,
        images, mask, elapsed_s: (performance.now() - t0) / 1000 };
    },
  };
}
