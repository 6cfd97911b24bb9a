// Image-level tasks on the exported graphs, in the browser: inpaint, outpaint, class edit, generate, as
// varedit.tasks.Editor runs them (window -> canvas plan -> tokenise -> masked sampling -> decode ->
// harmonize -> paste-back with a feathered mask). Images in and out are RGBA {width, height, data:
// Uint8ClampedArray}; masks Uint8Array(width * height), 1 = regenerate. No DOM here.
//
// What differs from Python's default (docs/onnx.md, "In the browser"): the inpaint prefill is push-pull
// (Python: OpenCV's Navier-Stokes inpainting), the resamplers are OpenCV's rules in float64 rather than
// OpenCV itself, the "original" (tiled) strategy and upscaling are not ported, and the sampler graph
// runs all scales in one call, so there are no per-scale previews.

import { portableUniforms } from "./runtime-noise.js";
import { COVERAGE, EDIT_COVERAGE, makePlan } from "./runtime-plan.js";
import { clipBox, extract, feather, harmonize, image, maskBBox, place, planCrop, planResize, prefill, resize } from "./runtime-imaging.js";
import { RuntimeError } from "./runtime-model.js";

export const EDIT_CFG = 3.0;
export const INPAINT_PREFILL = "pushpull";
export const OUTPAINT_PREFILL = "pushpull";
export const AUTO_LABEL_MAX_CLASSES = 100;
export const MAX_CANDIDATES = 64;
const STRATEGIES = ["auto", "crop", "resize"];

function fail(msg) {
  throw new RuntimeError(msg);
}

function drawSeed() {
  const a = new Uint32Array(1);
  crypto.getRandomValues(a);
  return a[0] >>> 1;
}

function checkSeed(seed) {
  if (seed === null || seed === undefined) return drawSeed();
  const s = Number(seed);
  if (!Number.isSafeInteger(s) || s < 0) fail(`seed must be an integer >= 0, not ${seed}`);
  return s;
}

// RGBA bytes -> float RGB image in [0, 1] (float32 values, as Python's load_image)
export function rgbOf(px) {
  const { width: w, height: h, data } = px, img = image(w, h, 3);
  for (let i = 0; i < w * h; i++) for (let k = 0; k < 3; k++) img.data[i * 3 + k] = Math.fround(data[i * 4 + k] / 255);
  return img;
}

export function maskOf(px, threshold = 0.5) { // white = regenerate; with transparency, the painted (opaque) pixels
  const { width: w, height: h, data } = px, m = new Uint8Array(w * h);
  let alpha = false;
  for (let i = 0; i < w * h && !alpha; i++) alpha = data[i * 4 + 3] < 255;
  for (let i = 0; i < w * h; i++) {
    const v = alpha ? data[i * 4 + 3] / 255 : (0.299 * data[i * 4] + 0.587 * data[i * 4 + 1] + 0.114 * data[i * 4 + 2]) / 255;
    m[i] = v > threshold ? 1 : 0;
  }
  return m;
}

export class Tasks {
  constructor(model) {
    this.model = model;
    const d = model.defaults;
    this.defaults = { cfg: d.cfg, top_k: d.top_k, top_p: d.top_p, guidance: d.guidance || "linear" };
    this.editDefaults = { ...this.defaults, cfg: EDIT_CFG };
  }

  get classes() {
    const names = this.model.classNames;
    return Array.from({ length: this.model.numClasses }, (_, i) => ({ index: i, names: names ? names[i] : [String(i)] }));
  }

  classIndex(spec) {
    if (typeof spec === "number" || /^\d+$/.test(String(spec).trim())) {
      const i = Number(spec);
      if (!Number.isInteger(i) || i < 0 || i >= this.model.numClasses) fail(`class ${spec} is out of range 0..${this.model.numClasses - 1}`);
      return i;
    }
    const key = String(spec).trim().toLowerCase();
    const names = this.model.classNames || [];
    const i = names.findIndex((ns) => ns.some((n) => n.toLowerCase() === key));
    if (i < 0) fail(`unknown class ${JSON.stringify(spec)}`);
    return i;
  }

  className(i) {
    const names = this.model.classNames;
    return names && i >= 0 && i < names.length ? names[i][0] : String(i);
  }

  sampling(base, o) {
    const pick = (k, alt) => (o[k] === null || o[k] === undefined || o[k] === "" ? base[alt || k] : Number(o[k]));
    return { cfg: pick("cfg"), topK: pick("top_k"), topP: pick("top_p"), guidance: o.guidance || base.guidance };
  }

  // ---- the sampler on a batch of plans (OnnxBackend.run) ----------------------------------------------
  async runPlans(plans, labels, s, uniforms, debug) {
    const m = this.model, pns = m.patchNums, SN = pns.length, N = plans.length;
    const keep = pns.map((p, k) => {
      const a = new Uint8Array(N * p * p);
      plans.forEach((pl, n) => a.set(pl.keep[k], n * p * p));
      return a;
    });
    const anyKeep = keep.some((a) => a.some((v) => v));
    let out;
    const t0 = performance.now();
    let tok = null;
    if (!anyKeep) {
      out = await m.sample({ labels, uniforms, cfg: s.cfg, topK: s.topK, topP: s.topP, guidance: s.guidance });
    } else {
      tok = await m.tokenize(plans.map((p) => p.encode));
      if (debug) debug.tokenize_ms = performance.now() - t0;
      const closed = plans[0].closedLoop;
      out = await m.sample({ labels, keep, known: closed ? null : tok.tokens, fKnown: closed ? tok.f : null,
        poolW: closed ? plans[0].poolW : null, uniforms, cfg: s.cfg, topK: s.topK, topP: s.topP, guidance: s.guidance });
    }
    const t1 = performance.now();
    const images = await m.decode(out.fHat, N);
    if (debug) {
      debug.tokens = pns.map((p, k) => Array.from({ length: N }, (_, n) => Array.from(out.tokens[k].subarray(n * p * p, (n + 1) * p * p), Number)));
      debug.keep = keep.map((a) => Array.from(a));
      if (anyKeep) debug.encode = plans.map((p) => Array.from(p.encode.data));
      debug.labels = labels;
      debug.sample_ms = t1 - t0;
      debug.decode_ms = performance.now() - t1;
    }
    return { images, logprob: Array.from(out.logprob) };
  }

  // ---- labels -------------------------------------------------------------------------------------
  // the class the model finds most likely for what is outside the mask (Editor.infer_label); the canvases
  // are planned as the run plans them (prefill: the run's; Python's inference always prefills with its default)
  async inferLabel(rgb, mask, strategy, prefillMethod = INPAINT_PREFILL) {
    const m = this.model, plans = [];
    for (const win of this.windows(strategy, mask, rgb.w, rgb.h)) {
      const { canvas, cmask } = extract(win, rgb, mask);
      if (cmask.some((v) => v)) plans.push(makePlan(canvas, cmask, m.patchNums, m.downsample, { prefillMethod }));
    }
    const N = plans.length, pns = m.patchNums;
    const tok = await m.tokenize(plans.map((p) => p.encode));
    const keep = pns.map((p, k) => {
      const a = new Uint8Array(N * p * p);
      plans.forEach((pl, n) => a.set(pl.keep[k], n * p * p));
      return a;
    });
    const rows = await m.classLogLikelihood(tok.f, tok.tokens, keep, N);
    const ll = new Float64Array(m.numClasses);
    for (const r of rows) r.forEach((v, c) => { ll[c] += v; });
    let best = 0;
    ll.forEach((v, c) => { if (v > ll[best]) best = c; });
    const mx = ll[best], post = Array.from(ll, (v) => Math.exp(v - mx)), z = post.reduce((a, b) => a + b, 0);
    return { label: best, posterior: post.map((p) => p / z), logLikelihood: Array.from(ll) };
  }

  async resolveLabel(label, rgb, mask, strategy, prefillMethod) {
    const m = this.model;
    const key = label === null || label === undefined ? "none" : String(label).trim().toLowerCase();
    if (!["auto", "infer", "none"].includes(key)) return { label: this.classIndex(label), info: { label_source: "given" } };
    if (key === "none") return { label: m.numClasses, info: { label_source: "unconditional" } };
    if (key === "auto") {
      if (!m.canScoreLabels) return { label: m.numClasses, info: { label_source: "unconditional (backend cannot infer)" } };
      if (m.numClasses > AUTO_LABEL_MAX_CLASSES) return { label: m.numClasses, info: { label_source: "unconditional (too many classes to infer)" } };
    }
    if (!mask.some((v) => v)) return { label: m.numClasses, info: { label_source: "unconditional (empty mask)" } };
    if (mask.every((v) => v)) return { label: m.numClasses, info: { label_source: "unconditional (nothing known: the whole image is masked)" } };
    const g = await this.inferLabel(rgb, mask, strategy, prefillMethod);
    const top = g.posterior.map((p, i) => [i, p]).sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, 3);
    return { label: g.label, info: { label_source: "inferred", label_posterior: top.map(([i, p]) => [this.className(i), Math.round(p * 1e4) / 1e4]),
      label_log_likelihood: g.logLikelihood } };
  }

  windows(strategy, mask, w, h) {
    if (!STRATEGIES.includes(strategy)) fail(`strategy ${strategy} is not in the browser: use crop, resize or auto`);
    return strategy === "resize" ? [planResize(w, h, this.model.imageSize)] : [planCrop(mask, w, h, this.model.imageSize)];
  }

  featherPx(w, h) { // the default paste-back feather, 4 output pixels whatever the size (Editor.feather_px)
    return 4;
  }

  // ---- the masked tasks (Editor._edit_masked) -------------------------------------------------------
  async editMasked(px, mask, o, task, { extraAlpha = null, extra = {} } = {}) {
    const m = this.model, W = px.width, H = px.height;
    const n = o.n === undefined || o.n === null ? 1 : Number(o.n);
    if (!Number.isInteger(n) || n < 1 || n > MAX_CANDIDATES) fail(`n must be an integer in 1..${MAX_CANDIDATES}, not ${o.n}`);
    const keepScales = Number(o.keep_scales || 0), growTokens = Number(o.grow_tokens || 0);
    if (!Number.isInteger(keepScales) || keepScales < 0 || keepScales > m.patchNums.length) fail(`keep_scales must be in 0..${m.patchNums.length}`);
    const mode = o.mode || "default", strategy = o.strategy || "crop";
    const prefillMethod = o.prefill || (task === "outpaint" ? OUTPAINT_PREFILL : INPAINT_PREFILL);
    const coverage = o.coverage === undefined || o.coverage === null ? (task === "edit" ? EDIT_COVERAGE : COVERAGE) : Number(o.coverage);
    const harmonizeOn = o.harmonize === undefined ? true : !!o.harmonize;
    const pasteBack = o.paste_back === undefined ? true : !!o.paste_back;
    const s = this.sampling(this.editDefaults, o);
    const seed = checkSeed(o.seed);
    const rgb = rgbOf(px);
    const featherPx = o.feather === undefined || o.feather === null ? this.featherPx(W, H) : Number(o.feather);
    const t0 = performance.now();
    const say = typeof o.onPhase === "function" ? o.onPhase : () => {};
    if (task !== "edit" && ["auto", "infer"].includes(String(o.label ?? "auto").toLowerCase())) say("inferring the class…", 0.1);
    const { label, info } = await this.resolveLabel(task === "edit" ? o.label : (o.label ?? "auto"), rgb, mask, strategy,
      prefillMethod === "none" ? INPAINT_PREFILL : prefillMethod);
    const settings = { task, seed, label, ...info, strategy, mode, n, keep_scales: keepScales, grow_tokens: growTokens,
      feather: featherPx, prefill: mode === "official" ? null : prefillMethod, coverage: mode === "official" ? null : coverage,
      closed_loop: !!o.closed_loop, harmonize: harmonizeOn, paste_back: pasteBack, cfg: s.cfg, top_k: s.topK, top_p: s.topP, guidance: s.guidance,
      backend: "onnxruntime-web", ...extra };
    const debug = o.debug ? { label_ms: performance.now() - t0 } : null;
    const t1 = performance.now();
    if (!mask.some((v) => v)) {
      return { images: Array.from({ length: n }, () => copyPixels(px)), seed, settings, scores: Array(n).fill(0), mask, debug };
    }
    // one window (crop or resize); the candidates are the rows of one batch
    const [win] = this.windows(strategy, mask, W, H);
    const { canvas, cmask } = extract(win, rgb, mask);
    const plan = makePlan(canvas, cmask, m.patchNums, m.downsample, { mode, keepFirst: keepScales, growTokens, prefillMethod, coverage,
      closedLoop: !!o.closed_loop });
    const uniforms = portableUniforms(seed, n, m.patchNums);
    say(`sampling ${n} candidate${n > 1 ? "s" : ""}…`, 0.4);
    const t2 = performance.now();
    const out = await this.runPlans(Array(n).fill(plan), Array(n).fill(label), s, uniforms, debug);
    const t3 = performance.now();
    const weight = pasteBack ? feather(mask, W, H, featherPx) : new Float32Array(W * H).fill(1);
    const [cx0, cy0, cx1, cy1] = clipBox(win);
    const cands = out.images.map((dec) => {
      const fixed = harmonizeOn ? harmonize(dec, canvas, cmask) : dec;
      const pl = place(win, fixed);
      const work = image(W, H, 3, Float32Array.from(rgb.data));
      for (let y = cy0; y < cy1; y++) for (let x = cx0; x < cx1; x++) {
        const i = y * W + x, j = (y - pl.y) * pl.img.w + (x - pl.x);
        for (let k = 0; k < 3; k++) work.data[i * 3 + k] = pl.img.data[j * 3 + k];
      }
      return compose(px, work, weight, extraAlpha);
    });
    const order = out.logprob.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).map(([, i]) => i);
    if (debug) {
      debug.window = win.box;
      debug.plan_ms = t2 - t1;
      debug.post_ms = performance.now() - t3;
      debug.total_ms = performance.now() - t0;
    }
    return { images: order.map((i) => cands[i]), scores: order.map((i) => out.logprob[i]), seed, settings, mask, debug };
  }

  async inpaint(px, mask, o = {}) {
    if (mask.length !== px.width * px.height) fail(`the mask is not ${px.width}x${px.height}`);
    return this.editMasked(px, mask, o, "inpaint");
  }

  async edit(px, box, cls, o = {}) {
    const [x0, y0, x1, y1] = box.map((v) => Math.round(Number(v)));
    const W = px.width, H = px.height;
    const cx0 = Math.max(0, x0), cy0 = Math.max(0, y0), cx1 = Math.min(W, x1), cy1 = Math.min(H, y1);
    if (!(cx1 > cx0 && cy1 > cy0)) fail(`box ${box} is empty inside the ${W}x${H} image`);
    if (cls === null || cls === undefined || String(cls).trim() === "") fail("a class edit needs a class");
    const mask = new Uint8Array(W * H);
    for (let y = cy0; y < cy1; y++) mask.fill(1, y * W + cx0, y * W + cx1);
    return this.editMasked(px, mask, { ...o, label: this.classIndex(cls) }, "edit", { extra: { box: [x0, y0, x1, y1] } });
  }

  async outpaint(px, pads, o = {}) {
    const p = {};
    for (const k of ["left", "right", "top", "bottom"]) {
      const v = Number(pads[k] || 0);
      if (!Number.isInteger(v) || v < 0) fail(`${k} must be a whole number of pixels >= 0, not ${pads[k]}`);
      p[k] = v;
    }
    if (!(p.left + p.right + p.top + p.bottom)) fail("give a side to extend (left, right, top or bottom)");
    const W = px.width + p.left + p.right, H = px.height + p.top + p.bottom;
    if (W * H > 64e6) fail(`the outpainted canvas (${W}x${H}) is too large for the browser`);
    const fill = o.fill || "blur";
    const rgb = rgbOf(px), ext = image(W, H, 3), area = new Uint8Array(W * H).fill(1);
    for (let y = 0; y < px.height; y++) for (let x = 0; x < px.width; x++) {
      const i = (y + p.top) * W + x + p.left, j = y * px.width + x;
      area[i] = 0;
      for (let k = 0; k < 3; k++) ext.data[i * 3 + k] = rgb.data[j * 3 + k];
    }
    const filled = fillNewArea(ext, area, fill);
    const big = { width: W, height: H, data: new Uint8ClampedArray(W * H * 4) };
    for (let i = 0; i < W * H; i++) {
      for (let k = 0; k < 3; k++) big.data[i * 4 + k] = Math.floor(filled.data[i * 3 + k] * 255 + 0.5);
      big.data[i * 4 + 3] = 255;
    }
    for (let y = 0; y < px.height; y++) for (let x = 0; x < px.width; x++) { // the original bytes, untouched
      const i = (y + p.top) * W + x + p.left, j = y * px.width + x;
      for (let k = 0; k < 4; k++) big.data[i * 4 + k] = px.data[j * 4 + k];
    }
    return this.editMasked(big, area, { ...o, strategy: o.strategy || "auto" }, "outpaint", { extra: { ...p, fill } });
  }

  async generate(cls, o = {}) {
    const m = this.model, S = m.imageSize;
    const n = o.n === undefined || o.n === null ? 1 : Number(o.n);
    if (!Number.isInteger(n) || n < 1 || n > MAX_CANDIDATES) fail(`n must be an integer in 1..${MAX_CANDIDATES}, not ${o.n}`);
    const labels = Array.isArray(cls) ? cls.map((c) => this.classIndex(c))
      : Array(n).fill(cls === null || cls === undefined || String(cls).trim() === "" || String(cls).trim().toLowerCase() === "none"
        ? m.numClasses : this.classIndex(cls));
    const s = this.sampling(this.defaults, o);
    const seed = checkSeed(o.seed);
    const debug = o.debug ? {} : null;
    const uniforms = portableUniforms(seed, labels.length, m.patchNums);
    const noKeep = { keep: m.patchNums.map((p) => new Uint8Array(p * p)) };
    const out = await this.runPlans(Array(labels.length).fill(noKeep), labels, s, uniforms, debug);
    const blank = { width: S, height: S, data: new Uint8ClampedArray(S * S * 4).fill(255) };
    const images = out.images.map((im) => compose(blank, im, new Float32Array(S * S).fill(1), null));
    const settings = { task: "generate", seed, labels, n: labels.length, cfg: s.cfg, top_k: s.topK, top_p: s.topP,
      guidance: s.guidance, backend: "onnxruntime-web" };
    return { images, scores: out.logprob, seed, settings, mask: null, debug };
  }
}

function copyPixels(px) {
  return { width: px.width, height: px.height, data: new Uint8ClampedArray(px.data) };
}

// the result in the input's bytes: mixed by the paste-back weight, 0 = the input's pixel exactly
export function compose(px, work, weight, extraAlpha) {
  const out = copyPixels(px), n = px.width * px.height;
  for (let i = 0; i < n; i++) {
    const w = weight[i];
    if (!(w > 0)) continue;
    for (let k = 0; k < 3; k++) {
      const e = Math.min(1, Math.max(0, work.data[i * 3 + k]));
      out.data[i * 4 + k] = Math.min(255, Math.max(0, Math.floor(px.data[i * 4 + k] * (1 - w) + e * 255 * w + 0.5)));
    }
    if (extraAlpha) out.data[i * 4 + 3] = Math.floor(px.data[i * 4 + 3] * (1 - w) + 255 * w + 0.5);
  }
  return out;
}

// the outpainted area's first fill (extend_canvas): "edge", "mean", "gray" or "blur" (nearest known pixel,
// then a Gaussian blur with sigma half the extension's thickness)
function fillNewArea(ext, area, fill) {
  if (fill === "gray" || fill === "mean" || fill === "edge") return prefill(ext, area, fill);
  if (fill !== "blur") fail(`unknown fill ${fill}: blur, edge, mean or gray`);
  const near = prefill(ext, area, "edge");
  const { w, h } = ext;
  let thick = 0; // the largest distance of a new pixel from the original (box: the largest pad)
  const bb = maskBBox(Uint8Array.from(area, (v) => 1 - v), w, h);
  if (bb) thick = Math.max(bb[0], bb[1], w - bb[2], h - bb[3]);
  const sigma = Math.max(1, thick / 2);
  const blurred = bigBlur(near, sigma);
  const out = image(w, h, 3, Float32Array.from(ext.data));
  for (let i = 0; i < w * h; i++) if (area[i]) for (let k = 0; k < 3; k++) out.data[i * 3 + k] = Math.min(1, Math.max(0, blurred.data[i * 3 + k]));
  return out;
}

function gaussianBlur(img, sigma) { // separable, reflected border (BORDER_REFLECT_101-like)
  const r = Math.max(1, Math.ceil(3 * sigma)), k = [];
  let z = 0;
  for (let i = -r; i <= r; i++) { const v = Math.exp(-(i * i) / (2 * sigma * sigma)); k.push(v); z += v; }
  for (let i = 0; i < k.length; i++) k[i] /= z;
  const { w, h, c } = img;
  const refl = (i, n) => { if (n === 1) return 0; while (i < 0 || i >= n) i = i < 0 ? -i - 1 : 2 * n - i - 1; return i; };
  const tmp = image(w, h, c), out = image(w, h, c);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let ch = 0; ch < c; ch++) {
    let s = 0;
    for (let t = -r; t <= r; t++) s += k[t + r] * img.data[(y * w + refl(x + t, w)) * c + ch];
    tmp.data[(y * w + x) * c + ch] = s;
  }
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let ch = 0; ch < c; ch++) {
    let s = 0;
    for (let t = -r; t <= r; t++) s += k[t + r] * tmp.data[(refl(y + t, h) * w + x) * c + ch];
    out.data[(y * w + x) * c + ch] = s;
  }
  return out;
}

function bigBlur(img, sigma) { // fills._big_blur: blur a downscaled copy when sigma is large
  const { w, h } = img;
  let f = Math.max(1, Math.floor(sigma / 4));
  f = Math.min(f, Math.max(1, Math.floor(Math.min(w, h) / 2)));
  if (f <= 1) return gaussianBlur(img, sigma);
  const small = resize(img, Math.max(1, Math.floor(w / f)), Math.max(1, Math.floor(h / f)), "area");
  return resize(gaussianBlur(small, sigma / f), w, h, "linear");
}
