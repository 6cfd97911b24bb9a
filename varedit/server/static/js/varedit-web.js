// varedit in the browser: the exported ONNX graphs on onnxruntime-web, as an ES module.
//
//   import * as ort from "onnxruntime-web";             // or the page's vendored ort/ort.wasm.bundle.min.mjs
//   import { createVaredit } from "./js/varedit-web.js";
//   const v = createVaredit({ ort, model: "model/" });  // the folder with manifest.json and the graphs
//   await v.ready;                                       // the graphs are loaded
//   const png = await v.inpaint(imagePng, maskPng, { seed: 1 });   // a PNG data URL of the input's size
//
// Images and masks are PNG data URLs, Blobs, ImageData, canvases or ImageBitmaps; masks are white (or
// painted, opaque) where to regenerate. Every task resolves to the best candidate as a PNG data URL;
// `run(task, ...)` resolves to everything: {images: [data URLs, best first], seed, scores, settings}
// (and `debug`: tokens per scale, keep maps, the canvases sent to the tokenizer, when `debug: true`).

import { Model } from "./runtime-model.js";
import { Tasks, maskOf } from "./runtime-tasks.js";
import { toDataURL, toPixels } from "./runtime-pixels.js";

export { Model } from "./runtime-model.js";
export { Tasks } from "./runtime-tasks.js";
export { portableUniforms } from "./runtime-noise.js";

export const TASKS = ["inpaint", "outpaint", "edit", "generate"];

export function createVaredit({ ort, model = "model/", wasmPaths = null, numThreads = null, proxy = false,
  fetchBytes = null, load = true } = {}) {
  if (!ort || !ort.InferenceSession) throw new TypeError("createVaredit needs onnxruntime-web's module: { ort }");
  if (wasmPaths) ort.env.wasm.wasmPaths = wasmPaths;
  if (numThreads) ort.env.wasm.numThreads = numThreads;
  if (proxy) ort.env.wasm.proxy = true;
  ort.env.logLevel = "error"; // onnxruntime's graph-optimisation warnings are not the page's errors
  const base = new URL(model.endsWith("/") ? model : model + "/", globalThis.location ? location.href : undefined).href;
  const api = { ort, tasks: null, model: null, info: null };
  const t0 = performance.now();
  api.ready = (async () => {
    const m = await Model.open(ort, base, fetchBytes ? { fetchBytes } : {});
    if (load) await m.load();
    api.model = m;
    api.tasks = new Tasks(m);
    api.info = modelInfo(api.tasks);
    api.info.ready_ms = Math.round(performance.now() - t0);
    api.info.threads = ort.env.wasm.numThreads || 1;
    api.info.cross_origin_isolated = !!globalThis.crossOriginIsolated;
    return api.info;
  })();

  async function full(task, args) {
    await api.ready;
    const T = api.tasks;
    let r;
    if (task === "inpaint") {
      const [image, mask, o = {}] = args;
      const px = await toPixels(image), mp = await toPixels(mask);
      if (mp.width !== px.width || mp.height !== px.height) {
        throw new RangeError(`the mask is ${mp.width}x${mp.height} but the image is ${px.width}x${px.height}`);
      }
      r = await T.inpaint(px, maskOf(mp), o);
    } else if (task === "outpaint") {
      const [image, o = {}] = args;
      r = await T.outpaint(await toPixels(image), o, o);
    } else if (task === "edit") {
      const [image, o = {}] = args;
      if (!Array.isArray(o.box) || o.box.length !== 4) throw new TypeError("edit needs { box: [x0, y0, x1, y1], class }");
      r = await T.edit(await toPixels(image), o.box, o.class, o);
    } else if (task === "generate") {
      const [o = {}] = args;
      r = await T.generate(o.class, o);
    } else {
      throw new TypeError(`unknown task ${task}: ${TASKS.join(", ")}`);
    }
    return { ...r, images: await Promise.all(r.images.map(toDataURL)), mask: undefined, pixels: r.images };
  }

  api.run = (task, ...args) => full(task, args).then(({ pixels, ...rest }) => rest);
  api.runPixels = (task, ...args) => full(task, args);
  api.inpaint = async (image, mask, o) => (await full("inpaint", [image, mask, o])).images[0];
  api.outpaint = async (image, o) => (await full("outpaint", [image, o])).images[0];
  api.edit = async (image, o) => (await full("edit", [image, o])).images[0];
  api.generate = async (o) => (await full("generate", [o])).images[0];
  return api;
}

// the model's description in the shape of the server's GET /api/v1/model (what the editor reads)
export function modelInfo(T) {
  const m = T.model;
  return {
    name: m.name, backend: `in the browser, ${m.precision}`, image_size: m.imageSize, num_classes: m.numClasses,
    classes: T.classes, patch_nums: m.patchNums, can_infer_label: m.canScoreLabels,
    defaults: { cfg: T.defaults.cfg, top_k: T.defaults.top_k, top_p: T.defaults.top_p },
    edit_defaults: { cfg: T.editDefaults.cfg, top_k: T.editDefaults.top_k, top_p: T.editDefaults.top_p },
    limits: { max_candidates: 16 }, previews: false, tasks: TASKS, batch: m.batch, precision: m.precision,
  };
}
